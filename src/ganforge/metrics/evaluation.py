"""`evaluate`: stream generated images through the feature networks and compute the metrics.

Generated images never touch the disk: `generate(batch_size, generator)` is called batch by
batch and each batch goes through every feature network the chosen metrics need (features are
computed once per network). The real reference side (mean and covariance, plus features for
KID and precision/recall) is cached on disk, keyed by the real data's content fingerprint and
everything else that changes it (`ganforge.metrics.reference`), so it is computed once. Every
metric in the returned record carries how it was computed: N generated, N real, split, network and
checksum, resize, seed, version, time. Metric definitions and papers: `ganforge.metrics.definitions` and `functional`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union, cast

import torch

from ganforge import __version__
from ganforge.data.base import default_cache_dir
from ganforge.errors import ConfigError
from ganforge.metrics import reference
from ganforge.metrics.definitions import CLASSIFIER, INCEPTION, METRICS, Context, MetricSpec, Side, Unavailable
from ganforge.metrics.functional import FeatureStats
from ganforge.metrics.precision import PRECISION, maths_device, strict_fp32
from ganforge.metrics.progress import Progress, duration

SMALL_N = 2048
Generate = Callable[[int, torch.Generator], tuple[torch.Tensor, Optional[torch.Tensor]]]


CPU_BATCH = 50       # images generated per batch on a CPU (Inception runs them in chunks of 16 anyway)
CUDA_BATCH = 500     # on a GPU: fewer, larger generator calls; the feature networks chunk to fit memory


def resolve_batch_size(batch_size: Union[int, str], device: Union[str, torch.device], *, cpu: int = CPU_BATCH) -> int:
    """The generation batch: an int as given, or "auto": `cpu` on a CPU (and MPS), CUDA_BATCH on CUDA.
    It only sets how many images are generated at once; each feature network splits it into the
    chunks it can hold (`InceptionFeatures.chunk_size`)."""
    if batch_size == "auto":
        return CUDA_BATCH if torch.device(device).type == "cuda" else cpu
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be 'auto' or a whole number of at least 1, got {batch_size!r}")
    return batch_size


class _Collector:
    """Accumulates one side's outputs of one network, keeping only what the metrics need, on the device
    the network gave them on (no copy to the host per batch)."""

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
            self.labels.append(labels.detach().long())

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
    def __init__(self, key: str, fn: Callable, *, name: str, sha256: str, resize: str, source: str,
                 precision: str = PRECISION):
        self.key, self.fn, self.name, self.sha256, self.resize, self.source = key, fn, name, sha256, resize, source
        self.precision = precision
        self.seconds_fake = self.seconds_real = 0.0
        self.images_fake = self.images_real = 0

    def __call__(self, images: torch.Tensor, device: torch.device):
        # Strict fp32 here as well as inside the shipped networks, so any feature function (a
        # stand-in, a sharded wrapper) runs without TF32 while training keeps it.
        with strict_fp32(device.type):
            return self.fn(images)


def _sharded(fn: Callable, *, device: torch.device) -> Callable:
    """Under torchrun: every rank holds the same batch, runs `fn` on its contiguous share of it, and
    the shares are gathered back in order, so each rank gets the whole batch's outputs for 1/world of
    the work. The batch is padded with its last image so every share has the same size (all_gather
    needs that); the padding is cut off again. The outputs stay on the device (NCCL gathers there)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    on_device = dist.get_backend() == "nccl"  # NCCL gathers CUDA tensors only
    home = maths_device(device)

    def gather(t: torch.Tensor, n: int) -> torch.Tensor:
        t = t.to(device) if on_device else t.cpu()
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)[:n].to(home)

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


# Feature networks already built in this process, by what identifies them: loading Inception takes
# seconds and 100 MB, and a training run evaluates every epoch.
_LOADED: dict[tuple, Any] = {}


def _file_identity(path) -> Any:
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    st = p.stat() if p.is_file() else None
    return str(p), (st.st_size, st.st_mtime_ns) if st else None


def load_network(kind: str, *, device, inception_path=None, cache_dir=None, dataset: Optional[str] = None):
    """The InceptionFeatures or ShippedClassifier(`dataset`) on `device`, built once per process for the
    same file, device and cache folder, and reused by later evaluations (and audits)."""
    import os

    from ganforge.metrics.inception import ENV_VAR

    device = torch.device(device)
    if kind == INCEPTION:
        ident = (kind, _file_identity(inception_path or os.environ.get(ENV_VAR)), str(cache_dir), str(device))
    else:
        ident = (kind, dataset, str(device))
    if ident not in _LOADED:
        if kind == INCEPTION:
            from ganforge.metrics.inception import InceptionFeatures

            _LOADED[ident] = InceptionFeatures(inception_path, device=device, cache_dir=cache_dir)
        else:
            from ganforge.metrics.classifier import ShippedClassifier

            if dataset is None:
                raise ValueError("the shipped classifier is chosen by the dataset's name; none was given")
            _LOADED[ident] = ShippedClassifier(dataset, device=device)
    return _LOADED[ident]


def _build_network(key: str, *, device, inception_path, cache_dir, classifier: Optional[str]) -> _Network:
    if key == INCEPTION:
        net = load_network(INCEPTION, device=device, inception_path=inception_path, cache_dir=cache_dir)
        kind = " (pt_inception, with logits)" if net.has_logits else " (TorchScript)"
        return _Network(key, net, name=net.name + kind,
                        sha256=net.sha256, resize=net.resize_method, source=f"{net.source.origin}: {net.source.path}")
    from ganforge.metrics.classifier import CLASSIFIER_FOR, INPUT_SIZE

    if classifier not in CLASSIFIER_FOR:
        raise Unavailable(f"there is a shipped classifier only for {', '.join(CLASSIFIER_FOR)}, "
                          f"not for {classifier!r}")
    net = load_network(CLASSIFIER, device=device, dataset=CLASSIFIER_FOR[classifier])
    return _Network(key, net, name=net.name, sha256=net.sha256, source=str(net.path),
                    resize=f"none at {INPUT_SIZE}x{INPUT_SIZE}, else antialiased bilinear to {INPUT_SIZE}")


def context(*, inception_path=None, classifier: Optional[str] = None, conditional: bool = False,
            cache_dir: Optional[Path] = None) -> Context:
    """Which feature networks can run here and which give logits, found without loading them. A missing
    default Inception network is a reason to leave its metrics out; a bad file the user named is an error."""
    import os

    from ganforge.metrics.classifier import CLASSIFIER_FOR, weights_path
    from ganforge.metrics.inception import ENV_VAR, InceptionError, locate

    networks: dict[str, Optional[str]] = {}
    logits = set()
    try:
        if locate(inception_path, cache_dir=cache_dir).kind == "pt_inception":
            logits.add(INCEPTION)
        networks[INCEPTION] = None
    except InceptionError as e:
        if inception_path is not None or os.environ.get(ENV_VAR):
            raise
        networks[INCEPTION] = str(e)
    if classifier not in CLASSIFIER_FOR:
        networks[CLASSIFIER] = f"there is a shipped classifier only for {', '.join(CLASSIFIER_FOR)}, not {classifier!r}"
    elif not weights_path(CLASSIFIER_FOR[classifier]).is_file():
        networks[CLASSIFIER] = f"the shipped classifier {weights_path(CLASSIFIER_FOR[classifier])} is missing"
    else:
        networks[CLASSIFIER] = None
        logits.add(CLASSIFIER)
    return Context(networks, frozenset(logits), conditional)


def _real_fingerprint(real_images, given: Optional[str]) -> tuple[str, Any]:
    """(fingerprint of the real data, the images if they had to be loaded to compute it, else None)."""
    from ganforge.metrics.reference import content_hash

    if given:
        return given, None
    if getattr(real_images, "fingerprint", ""):
        return real_images.fingerprint, None
    images = real_images() if callable(real_images) else real_images
    images = cast(torch.Tensor, getattr(images, "images", images))  # an ImageData or the tensor itself
    return content_hash(images), images


def _subset(images: torch.Tensor, n_real: Optional[int], dataset_key: str, split: str) -> torch.Tensor:
    if n_real is None or n_real == len(images):
        return images
    if n_real > len(images):
        raise ConfigError(f"asked for {n_real} real images but {dataset_key} {split} has {len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(reference.SUBSET_SEED))
    return images[order[:n_real]]


def evaluate(*, generate: Generate, real_images: Union[torch.Tensor, Callable[[], torch.Tensor]], dataset_key: str,
             metrics: Sequence[str], n: int, batch_size: Union[int, str] = "auto", device: str | torch.device = "cpu",
             seed: int = 0, inception_path: Optional[Union[str, Path]] = None, cache_dir: Optional[Path] = None,
             split: str = "train", n_real: Optional[int] = None, classifier: Optional[str] = None,
             log: Optional[Callable[[str], None]] = None, shard: bool = False,
             real_fingerprint: Optional[str] = None) -> dict[str, Any]:
    """Compute `metrics` (keys of METRICS) for `n` generated images against the real `split`.

    generate(batch_size, generator) -> (uint8 [B, C, H, W], requested labels [B] or None), on any
    device: the images go to the feature networks where they are. batch_size: images per generate()
    call, or "auto" (`resolve_batch_size`). real_images: uint8 [N, C, H, W] (or an ImageData), or a
    function returning it, called only when the reference statistics are not cached. n_real: how many
    real images (a fixed random subset; default all). real_fingerprint: what the reference cache is
    keyed by, e.g. `ganforge.data.dataset_fingerprint(...)` or `ImageData.fingerprint`; without it the
    images are loaded and hashed. classifier: which shipped classifier the cls-* metrics use (default:
    dataset_key). shard: under torchrun, every rank calls `evaluate` alike and the feature networks'
    work is split between them (generation is repeated on each rank: it is cheap next to Inception);
    rank 0 alone computes the metrics from the gathered features and sends the record to the others,
    so all ranks return the same record.
    Feature passes run in strict float32 (`ganforge.metrics.precision`); the metric maths in float64
    on the device when it is a GPU. Everything that can fail on the reference side (reading the real
    data, N real larger than the split) fails before the first image is generated. `log` gets an
    estimate of the time after the first batch, then progress with the time to go.
    Returns {"metrics": {name: record}, "networks": {...}, ...}; a metric that cannot be
    computed has value None and an "unavailable" reason.
    """
    batch_size = resolve_batch_size(batch_size, device)
    specs = _check(metrics, n, n_real)
    t_start = time.perf_counter()
    device = torch.device(device)
    networks, unavailable = _networks(specs, device=device, inception_path=inception_path, cache_dir=cache_dir,
                                      classifier=classifier or dataset_key)
    group = shard and _in_process_group()
    if group:
        for net in networks.values():
            net.fn = _sharded(net.fn, device=device)
    for s in specs:
        if s.small_n_warning and n < SMALL_N:
            warnings.warn(f"{s.name} with n={n} < {SMALL_N} generated images is biased upward and noisy; "
                          f"do not compare it with published numbers", stacklevel=2)

    # The reference side first: from the cache (decided once for all ranks), else the real images are
    # loaded and checked now, before any image is generated.
    real_needs = {k: set().union(*(s.real_needs for s in specs if s.network == k)) for k in networks}
    real_needs = {k: v for k, v in real_needs.items() if v}
    real, real_info, images_real = _cached_reference(
        networks, real_needs, real_images, real_fingerprint, device=device, group=group,
        key=dict(dataset=dataset_key, split=split, n_real=n_real), cache_dir=cache_dir)

    n_real_left = len(images_real) if images_real is not None else 0  # loaded when a network is not cached
    fake, t_gen, per_image, progress = _generated_pass(
        generate, networks, specs, n=n, batch_size=batch_size, seed=seed, device=device,
        real_left={k: n_real_left for k in real_needs if k not in real}, log=log)

    for k in real_needs:
        if k not in real:
            assert images_real is not None, "_cached_reference loads the real images for every uncached network"
            real[k] = _real_pass(networks[k], real_needs[k], images_real, batch_size, device,
                                 lambda m, k=k: progress.advance(m * per_image[k]))
            if not group or _is_main():  # every rank holds the same statistics; one writes them
                reference.save(Path(real_info[k]["cache"]), real_info[k].pop("key"), real[k])
        real_info[k].pop("key", None)
    progress.close()

    results = _compute(specs, networks, unavailable, fake, real, n=n, seed=seed, split=split, device=device) \
        if not group or _is_main() else None
    if group:
        results = _broadcast(results, device)
    return {
        "metrics": results,
        "dataset": dataset_key, "reference_split": split, "n_generated": n, "seed": seed,
        "device": str(device), "ranks": torch.distributed.get_world_size() if group else 1,
        "precision": PRECISION, "batch_size": batch_size, "ganforge_version": __version__,
        "generate_seconds": round(t_gen, 3), "seconds": round(time.perf_counter() - t_start, 3),
        "time_to_go": {"estimated_seconds": round(progress.estimate, 3),   # after the first batch
                       "actual_seconds": round(progress.elapsed, 3)},
        "networks": {k: _network_record(v, real_info.get(k)) for k, v in networks.items()},
    }


def _network_record(net: _Network, reference_info: Optional[dict]) -> dict:
    seconds = net.seconds_fake + net.seconds_real
    return {"name": net.name, "sha256": net.sha256, "resize_method": net.resize, "source": net.source,
            "precision": net.precision, "seconds_generated": round(net.seconds_fake, 3),
            "seconds_real": round(net.seconds_real, 3),
            "images_per_second": round((net.images_fake + net.images_real) / max(seconds, 1e-9), 2),
            **({"reference": reference_info} if reference_info is not None else {})}


def _check(metrics: Sequence[str], n: int, n_real: Optional[int]) -> list[MetricSpec]:
    """The metrics' specs, after refusing what cannot work (before an hour of reference features)."""
    if n < 2:
        raise ConfigError(f"n must be at least 2, got {n}")
    if not metrics:
        raise ConfigError("no metrics to compute: name at least one of " + ", ".join(METRICS.names()))
    specs: list[MetricSpec] = [METRICS.get(m) for m in dict.fromkeys(metrics)]
    for s in specs:
        if n < s.min_n or (s.real_needs and n_real is not None and n_real < s.min_n):
            raise ConfigError(f"metric {s.name} needs at least {s.min_n} generated and real images; "
                              f"got n={n}" + ("" if n_real is None else f", n_real={n_real}"))
    return specs


def _networks(specs, **build) -> tuple[dict[str, _Network], dict[str, str]]:
    networks: dict[str, _Network] = {}
    unavailable: dict[str, str] = {}
    for key in dict.fromkeys(s.network for s in specs):
        try:
            networks[key] = _build_network(key, **build)
        except Unavailable as e:
            unavailable[key] = str(e)
    return networks, unavailable


def _cached_reference(networks, real_needs, real_images, real_fingerprint, *, device, group, key, cache_dir):
    """(cached real sides by network, cache info by network, the real images when some side must be
    computed, else None). A cached side's features are moved to where the metric maths runs."""
    real: dict[str, Side] = {}
    real_info: dict[str, dict] = {}
    images_real = None
    if not real_needs:
        return real, real_info, images_real
    data_key, images_real = _real_fingerprint(real_images, real_fingerprint)
    folder = Path(cache_dir or default_cache_dir()) / "reference"
    for k in real_needs:
        net = networks[k]
        rk = reference.key(data=data_key, network=k, sha256=net.sha256, resize=net.resize,
                           precision=net.precision, device=device, **key)
        path = reference.path_for(folder, rk)
        side = reference.load(path, rk, real_needs[k])
        if reference.agree(side is not None, device=device, group=group):
            assert side is not None  # every rank found it, this one included
            if side.features is not None:
                side.features = side.features.to(maths_device(device))
            real[k] = side
        real_info[k] = {"cache": str(path), "cached": k in real, "key": rk}
    if len(real) < len(real_needs):
        if images_real is None:
            images_real = real_images() if callable(real_images) else real_images
        images_real = _subset(cast(torch.Tensor, getattr(images_real, "images", images_real)), key["n_real"],
                              key["dataset"], key["split"])
    return real, real_info, images_real


def _generated_pass(generate, networks, specs, *, n, batch_size, seed, device, real_left, log):
    """Generate n images batch by batch and run each batch through every network: (generated sides,
    generation seconds, seconds per image by step, the progress, estimated after the first batch)."""
    collectors = {k: _Collector(set().union(*(s.fake_needs for s in specs if s.network == k))) for k in networks}
    gen = torch.Generator().manual_seed(seed)
    t_gen, done, per_image, progress = 0.0, 0, {}, None
    while done < n:
        b = min(batch_size, n - done)
        t0 = time.perf_counter()
        images, labels = generate(b, gen)
        seconds = {"generate": time.perf_counter() - t0}
        t_gen += seconds["generate"]
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != b:
            raise TypeError(f"generate() must return uint8 [{b}, C, H, W], got {images.dtype} {tuple(images.shape)}")
        for net in networks.values():
            t0 = time.perf_counter()
            feats, logits = net(images, device)
            collectors[net.key].add(feats, logits, labels)
            seconds[net.key] = time.perf_counter() - t0
            net.seconds_fake += seconds[net.key]
            net.images_fake += b
        done += b
        if progress is None:  # the first batch measures this machine's seconds per image
            per_image = {k: v / b for k, v in seconds.items()}
            progress = _estimate(per_image, n - done, real_left, log)
        else:
            progress.advance(b * sum(per_image.values()))
    assert progress is not None  # n >= 2 (checked first): the loop ran at least once
    return {k: c.side() for k, c in collectors.items()}, t_gen, per_image, progress


def _compute(specs, networks, unavailable, fake, real, *, n, seed, split, device) -> dict[str, dict]:
    """Each metric's record, from the sides' features and statistics."""
    results: dict[str, dict] = {}
    for s in specs:
        net = networks.get(s.network)
        rec: dict[str, Any] = {"value": None, "n_generated": n, "seed": seed, "ganforge_version": __version__,
                               "reference_split": split if s.real_needs else None,
                               "n_real": real[s.network].n if s.real_needs and s.network in real else None}
        if net is not None:
            rec.update(feature_network=net.name, feature_network_sha256=net.sha256, resize_method=net.resize,
                       precision=net.precision, feature_device=device.type,
                       feature_seconds=round(net.seconds_fake + net.seconds_real, 3))
        t0 = time.perf_counter()
        try:
            if net is None:
                raise Unavailable(unavailable[s.network])
            rec.update(s.compute(fake[s.network], real.get(s.network), seed=seed))
        except Unavailable as e:
            rec["unavailable"] = str(e)
        if s.small_n_warning and n < SMALL_N:
            rec["warning"] = (f"n={n} < {SMALL_N}: too few images for a reliable value (FID biased upward, IS "
                              f"split into tiny groups), not comparable with published numbers")
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        results[s.name] = rec
    return results


def _broadcast(results: Optional[dict], device: torch.device) -> dict:
    """Rank 0's records, on every rank."""
    import torch.distributed as dist

    box = [results]
    dist.broadcast_object_list(box, src=0, device=device if dist.get_backend() == "nccl" else None)
    return cast(dict, box[0])


def _estimate(per_image: dict[str, float], fake_left: int, real_left: dict[str, int], log) -> Progress:
    """Say how long the rest will take (images x the seconds per image just measured); return the progress."""
    total = fake_left * sum(per_image.values()) + sum(m * per_image[k] for k, m in real_left.items())
    progress = Progress(total, log=log)
    if log is not None and total > 0:
        rates = ", ".join(f"{k} {1 / max(t, 1e-9):.1f}" for k, t in per_image.items())
        real = "".join(f" + {m} real through {k}" for k, m in real_left.items())
        log(f"estimate: {fake_left} more generated images{real}, at {rates} images/s measured on the first "
            f"batch here: about {duration(total)}")
    return progress


def _real_pass(net: _Network, needs: set[str], images: torch.Tensor, batch_size: int, device: torch.device,
               advance) -> Side:
    collector = _Collector(needs | {"stats"})
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        feats, _ = net(images[i: i + batch_size], device)
        collector.add(feats, None, None)
        advance(len(feats))
    net.seconds_real, net.images_real = time.perf_counter() - t0, len(images)
    return collector.side()


def make_generate(generator: torch.nn.Module, *, z_dim: int, num_classes: int = 0,
                  device: str | torch.device = "cpu") -> Generate:
    """Adapt a generator G(z, labels) with outputs in [-1, 1] to `evaluate`'s generate(): z ~ N(0, I)
    and, when num_classes > 0, labels uniform over the classes, both drawn from the given (CPU) generator,
    so the images do not depend on the device. Images and labels stay on `device`: the feature
    networks take them there, without a round trip through the host per batch."""
    dev = torch.device(device)

    @torch.inference_mode()
    def generate(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        z = torch.randn(batch, z_dim, generator=gen).to(dev)
        labels = torch.randint(0, num_classes, (batch,), generator=gen).to(dev) if num_classes else None
        x = generator(z, labels) if labels is not None else generator(z)
        return to_uint8(x), labels

    return generate


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator outputs in [-1, 1] as uint8 images."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


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


__all__ = ["evaluate", "make_generate", "flat_values", "load_network", "resolve_batch_size"]
