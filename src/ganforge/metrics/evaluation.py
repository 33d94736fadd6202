"""`evaluate`: stream generated images through the feature networks and compute the metrics.

Generated images never touch the disk: `generate(batch_size, generator)` is called batch by
batch and each batch goes through every feature network the chosen metrics need (features are
computed once per network). The real reference side (mean and covariance, plus features for
KID and precision/recall) is cached on disk under the key (dataset, split, N real, resize
method, network sha256), so it is computed once. Every metric in the returned record carries
how it was computed: N generated, N real, split, network and checksum, resize, seed, version,
time. Metric definitions and papers: `ganforge.metrics.definitions` and `functional`.
"""

from __future__ import annotations

import hashlib
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ganforge import __version__
from ganforge.errors import ConfigError
from ganforge.metrics.definitions import CLASSIFIER, INCEPTION, METRICS, MetricSpec, Side, Unavailable
from ganforge.metrics.functional import FeatureStats

SMALL_N = 2048
Generate = Callable[[int, torch.Generator], tuple[torch.Tensor, Optional[torch.Tensor]]]
REAL_SUBSET_SEED = 0   # the real subset depends on N real only, so the cache key stays valid


class _Collector:
    """Accumulates one side's outputs of one network, keeping only what the metrics need."""

    def __init__(self, needs: set[str]):
        self.needs, self.n = needs, 0
        self.stats: Optional[FeatureStats] = None
        self.features: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, feats: torch.Tensor, logits: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> None:
        self.n += len(feats)
        if "stats" in self.needs:
            self.stats = self.stats or FeatureStats(feats.shape[1])
            self.stats.update(feats)
        if "features" in self.needs:
            self.features.append(feats.float())
        if "logits" in self.needs and logits is not None:
            self.logits.append(logits)
        if labels is not None:
            self.labels.append(labels.detach().cpu().long())

    def side(self) -> Side:
        s = Side(n=self.n)
        if self.stats is not None:
            s.mu, s.sigma = self.stats.mean(), self.stats.cov()
        if self.features:
            s.features = torch.cat(self.features)
        if self.logits:
            s.logits = torch.cat(self.logits)
        if self.labels:
            s.labels = torch.cat(self.labels)
        return s


class _Network:
    def __init__(self, key: str, fn: Callable, *, name: str, sha256: str, resize: str, source: str):
        self.key, self.fn, self.name, self.sha256, self.resize, self.source = key, fn, name, sha256, resize, source
        self.seconds_fake = self.seconds_real = 0.0
        self.images_fake = self.images_real = 0


def _sharded(fn: Callable, *, device: torch.device) -> Callable:
    """Under torchrun: every rank holds the same batch, runs `fn` on its contiguous share of it, and
    the shares are gathered back in order, so each rank gets the whole batch's outputs for 1/world of
    the work. The batch is padded with its last image so every share has the same size (all_gather
    needs that); the padding is cut off again."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    on_device = dist.get_backend() == "nccl"  # NCCL gathers CUDA tensors only

    def gather(t: torch.Tensor, n: int) -> torch.Tensor:
        t = t.to(device) if on_device else t
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)[:n].cpu()

    def run(images: torch.Tensor):
        n, per = len(images), -(-len(images) // world)
        padded = torch.cat([images, images[-1:].expand(per * world - n, *images.shape[1:])])
        feats, logits = fn(padded[rank * per:(rank + 1) * per])
        return gather(feats, n), (gather(logits, n) if logits is not None else None)

    return run


def _in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _is_main() -> bool:
    return not _in_process_group() or torch.distributed.get_rank() == 0


def _build_network(key: str, *, device, inception_path, cache_dir, classifier: Optional[str]) -> _Network:
    if key == INCEPTION:
        from ganforge.metrics.inception import InceptionFeatures

        net = InceptionFeatures(inception_path, device=device, cache_dir=cache_dir)
        return _Network(key, net, name=net.name + (" (pt_inception, with logits)" if net.has_logits else " (TorchScript)"),
                        sha256=net.sha256, resize=net.resize_method, source=f"{net.source.origin}: {net.source.path}")
    from ganforge.metrics.classifier import CLASSIFIER_FOR, INPUT_SIZE, ShippedClassifier

    if classifier not in CLASSIFIER_FOR:
        raise Unavailable(f"there is a shipped classifier only for {', '.join(CLASSIFIER_FOR)}, "
                          f"not for {classifier!r}")
    net = ShippedClassifier(CLASSIFIER_FOR[classifier], device=device)
    return _Network(key, net, name=net.name, sha256=net.sha256, source=str(net.path),
                    resize=f"none at {INPUT_SIZE}x{INPUT_SIZE}, else antialiased bilinear to {INPUT_SIZE}")


def _cache_file(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key['dataset']}_{key['split']}_{key['n_real']}_{key['network']}")
    return folder / f"{stem}_{digest}.pt"


def _real_side(net: _Network, needs: set[str], *, real_images, n_real: Optional[int], dataset_key: str,
               split: str, batch_size: int, cache_dir: Optional[Path], log) -> tuple[Side, dict]:
    from ganforge.data.base import default_cache_dir

    images = None
    if n_real is None:
        images = real_images() if callable(real_images) else real_images
        n_real = len(images)
    key = {"dataset": dataset_key, "split": split, "n_real": int(n_real), "resize": net.resize,
           "network": net.key, "sha256": net.sha256, "subset_seed": REAL_SUBSET_SEED}
    path = _cache_file(Path(cache_dir or default_cache_dir()) / "reference", key)
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key and ("features" not in needs or "features" in saved):
                side = Side(n=int(n_real), mu=saved["mu"].numpy(), sigma=saved["sigma"].numpy(),
                            features=saved.get("features"))
                return side, {"cache": str(path), "cached": True}
        except Exception:  # an unreadable cache entry is recomputed and overwritten
            pass
    if images is None:
        images = real_images() if callable(real_images) else real_images
    if n_real > len(images):
        raise ConfigError(f"asked for {n_real} real images but {dataset_key} {split} has {len(images)}")
    if n_real < len(images):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(REAL_SUBSET_SEED))
        images = images[order[:n_real]]
    collector = _Collector(needs | {"stats"})
    t0 = time.perf_counter()
    for i in range(0, n_real, batch_size):
        feats, _ = net.fn(images[i: i + batch_size])
        collector.add(feats, None, None)
        if log and (i // batch_size) % 10 == 0:
            log(f"  {net.key} real features {i + len(feats)}/{n_real}")
    net.seconds_real, net.images_real = time.perf_counter() - t0, n_real
    side = collector.side()
    if not _is_main():  # every rank holds the same statistics; one writes them
        return side, {"cache": str(path), "cached": False}
    blob = {"key": key, "mu": torch.from_numpy(side.mu), "sigma": torch.from_numpy(side.sigma)}
    if side.features is not None:
        blob["features"] = side.features
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return side, {"cache": str(path), "cached": False}


def evaluate(*, generate: Generate, real_images: Union[torch.Tensor, Callable[[], torch.Tensor]], dataset_key: str,
             metrics: Sequence[str], n: int, batch_size: int = 50, device: str | torch.device = "cpu", seed: int = 0,
             inception_path: Optional[Union[str, Path]] = None, cache_dir: Optional[Path] = None,
             split: str = "train", n_real: Optional[int] = None, classifier: Optional[str] = None,
             log: Optional[Callable[[str], None]] = None, shard: bool = False) -> dict[str, Any]:
    """Compute `metrics` (keys of METRICS) for `n` generated images against the real `split`.

    generate(batch_size, generator) -> (uint8 [B, C, H, W], requested labels [B] or None).
    real_images: uint8 [N, C, H, W], or a function returning it (only called on a cache miss
    when n_real is given). n_real: how many real images (a fixed random subset; default all).
    classifier: which shipped classifier the cls-* metrics use (default: dataset_key).
    shard: under torchrun, every rank calls `evaluate` alike and the feature networks' work is split
    between them (generation is repeated on each rank: it is cheap next to Inception). All ranks
    return the same record.
    Returns {"metrics": {name: record}, "networks": {...}, ...}; a metric that cannot be
    computed has value None and an "unavailable" reason.
    """
    if n < 2:
        raise ConfigError(f"n must be at least 2, got {n}")
    specs: list[MetricSpec] = [METRICS.get(m) for m in dict.fromkeys(metrics)]
    t_start = time.perf_counter()
    networks: dict[str, _Network] = {}
    unavailable: dict[str, str] = {}
    for key in dict.fromkeys(s.network for s in specs):
        try:
            networks[key] = _build_network(key, device=device, inception_path=inception_path, cache_dir=cache_dir,
                                           classifier=classifier or dataset_key)
        except Unavailable as e:
            unavailable[key] = str(e)
    ranks = 1
    if shard and _in_process_group():
        ranks = torch.distributed.get_world_size()
        for net in networks.values():
            net.fn = _sharded(net.fn, device=torch.device(device))
    for s in specs:
        if s.small_n_warning and n < SMALL_N:
            warnings.warn(f"{s.name} with n={n} < {SMALL_N} generated images is biased upward and noisy; "
                          f"do not compare it with published numbers", stacklevel=2)

    fake_collectors = {k: _Collector(set().union(*(s.fake_needs for s in specs if s.network == k)))
                       for k in networks}
    gen = torch.Generator().manual_seed(seed)
    t_gen, done = 0.0, 0
    while done < n:
        b = min(batch_size, n - done)
        t0 = time.perf_counter()
        images, labels = generate(b, gen)
        t_gen += time.perf_counter() - t0
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != b:
            raise TypeError(f"generate() must return uint8 [{b}, C, H, W], got {images.dtype} {tuple(images.shape)}")
        for net in networks.values():
            t0 = time.perf_counter()
            feats, logits = net.fn(images)
            fake_collectors[net.key].add(feats, logits, labels)
            net.seconds_fake += time.perf_counter() - t0
            net.images_fake += b
        done += b
        if log and (done // b) % 10 == 0:
            log(f"  generated {done}/{n}")
    fake = {k: c.side() for k, c in fake_collectors.items()}

    real: dict[str, Side] = {}
    real_info: dict[str, dict] = {}
    for key, net in networks.items():
        needs = set().union(*(s.real_needs for s in specs if s.network == key))
        if needs:
            real[key], real_info[key] = _real_side(net, needs, real_images=real_images, n_real=n_real,
                                                   dataset_key=dataset_key, split=split, batch_size=batch_size,
                                                   cache_dir=cache_dir, log=log)

    results: dict[str, dict] = {}
    for s in specs:
        net = networks.get(s.network)
        rec: dict[str, Any] = {"value": None, "n_generated": n, "seed": seed, "ganforge_version": __version__,
                               "reference_split": split if s.real_needs else None,
                               "n_real": real[s.network].n if s.real_needs and s.network in real else None}
        if net is not None:
            rec.update(feature_network=net.name, feature_network_sha256=net.sha256, resize_method=net.resize,
                       feature_seconds=round(net.seconds_fake + net.seconds_real, 3))
        t0 = time.perf_counter()
        try:
            if net is None:
                raise Unavailable(unavailable[s.network])
            rec.update(s.compute(fake[s.network], real.get(s.network), seed=seed))
        except Unavailable as e:
            rec["unavailable"] = str(e)
        if s.small_n_warning and n < SMALL_N:
            rec["warning"] = f"n={n} < {SMALL_N}: biased upward, not comparable with published numbers"
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        results[s.name] = rec

    return {
        "metrics": results,
        "dataset": dataset_key, "reference_split": split, "n_generated": n, "seed": seed,
        "device": str(device), "ranks": ranks, "ganforge_version": __version__,
        "generate_seconds": round(t_gen, 3), "seconds": round(time.perf_counter() - t_start, 3),
        "networks": {k: {"name": v.name, "sha256": v.sha256, "resize_method": v.resize, "source": v.source,
                         "seconds_generated": round(v.seconds_fake, 3), "seconds_real": round(v.seconds_real, 3),
                         "images_per_second": round((v.images_fake + v.images_real)
                                                    / max(v.seconds_fake + v.seconds_real, 1e-9), 2),
                         **({"reference": real_info[k]} if k in real_info else {})}
                     for k, v in networks.items()},
    }


def make_generate(generator: torch.nn.Module, *, z_dim: int, num_classes: int = 0,
                  device: str | torch.device = "cpu") -> Generate:
    """Adapt a generator G(z, labels) with outputs in [-1, 1] to `evaluate`'s generate(): z ~ N(0, I)
    and, when num_classes > 0, labels uniform over the classes, both drawn from the given generator."""
    dev = torch.device(device)

    @torch.inference_mode()
    def generate(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        z = torch.randn(batch, z_dim, generator=gen).to(dev)
        labels = torch.randint(0, num_classes, (batch,), generator=gen).to(dev) if num_classes else None
        x = generator(z, labels) if labels is not None else generator(z)
        images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return images, labels.cpu() if labels is not None else None

    return generate


def flat_values(record: dict[str, Any]) -> dict[str, float]:
    """{"fid": 12.3, "pr_precision": 0.7, "pr_recall": 0.5, ...} from an `evaluate` record, for
    metrics.jsonl and TensorBoard; unavailable metrics are left out."""
    out: dict[str, float] = {}
    for name, rec in record["metrics"].items():
        value = rec.get("value")
        if isinstance(value, dict):
            out.update({f"{name}_{k}": float(v) for k, v in value.items()})
        elif value is not None:
            out[name] = float(value)
    return out


__all__ = ["evaluate", "make_generate", "flat_values"]
