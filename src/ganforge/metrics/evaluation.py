"""`evaluate`: stream generated images through the feature networks and compute the metrics.

Generated images never touch the disk: `generate(batch_size, generator)` is called batch by
batch and each batch goes through every feature network the chosen metrics need (features are
computed once per network). The real reference side (mean and covariance, plus features for
KID and precision/recall) is cached on disk, keyed by the real data's content fingerprint and
everything else that changes it (`ganforge.metrics.reference`), so it is computed once. Every
metric in the returned record carries how it was computed: N generated, N real, split, network and
checksum, resize, seed, version, time. Metric definitions and papers: `ganforge.metrics.definitions` and
`functional`; the feature networks, their per-process cache and their sharding under torchrun:
`ganforge.metrics.networks`; the real side and its cache: `ganforge.metrics.real_side`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union, cast

import torch

from ganforge import __version__
from ganforge.errors import ConfigError
from ganforge.metrics.definitions import METRICS, MetricSpec, Unavailable
from ganforge.metrics.networks import (
    _build_network,
    _in_process_group,
    _is_main,
    _Network,
    _sharded,
    context,
    load_network,
)
from ganforge.metrics.precision import PRECISION
from ganforge.metrics.progress import EvalProgress, duration
from ganforge.metrics.real_side import Collector, cached_reference, uncached_reference

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
    group = shard and _in_process_group()
    networks, unavailable = _networks(specs, group=group, device=device, inception_path=inception_path,
                                      cache_dir=cache_dir, classifier=classifier or dataset_key)
    _warn_if_small(specs, n)

    # The reference side first: from the cache (decided once for all ranks), else the real images are
    # loaded and checked now, before any image is generated.
    real_needs = _real_needs(specs, networks)
    real, real_info, images_real = cached_reference(
        networks, real_needs, real_images, real_fingerprint, device=device, group=group,
        key=dict(dataset=dataset_key, split=split, n_real=n_real), cache_dir=cache_dir)

    n_real_left = len(images_real) if images_real is not None else 0  # loaded when a network is not cached
    fake, t_gen, per_image, progress = _generated_pass(
        generate, networks, specs, n=n, batch_size=batch_size, seed=seed, device=device,
        real_left={k: n_real_left for k in real_needs if k not in real}, log=log)
    # Only now the uncached real sides: the estimate printed after the first generated batch
    # already counts them, so the user learns the whole cost before the long pass starts.
    uncached_reference(networks, real_needs, real, real_info, images_real, batch_size=batch_size, device=device,
                        group=group, advance=lambda k, m: progress.advance(m * per_image[k]))
    progress.close()

    results = _on_every_rank(group, device, lambda: _compute(specs, networks, unavailable, fake, real, n=n, seed=seed,
                                                             split=split, device=device))
    return {
        "metrics": results,
        "dataset": dataset_key, "reference_split": split, "n_generated": n, "seed": seed,
        "device": str(device), "ranks": torch.distributed.get_world_size() if group else 1,
        **_timings(batch_size, t_gen, time.perf_counter() - t_start, progress),
        "networks": {k: _network_record(v, real_info.get(k)) for k, v in networks.items()},
    }


def _warn_if_small(specs: list[MetricSpec], n: int) -> None:
    for s in specs:
        if s.small_n_warning and n < SMALL_N:
            # stacklevel 3: the warning names the line that called `evaluate`, not this helper
            warnings.warn(f"{s.name} with n={n} < {SMALL_N} generated images is biased upward and noisy; "
                          f"do not compare it with published numbers", stacklevel=3)


def _real_needs(specs: list[MetricSpec], networks: dict[str, _Network]) -> dict[str, set[str]]:
    """What the real side must hold, by network; a network no metric compares with real data is absent."""
    needs = {k: set().union(*(s.real_needs for s in specs if s.network == k)) for k in networks}
    return {k: v for k, v in needs.items() if v}


def _on_every_rank(group: bool, device: torch.device, compute: Callable[[], dict]) -> dict:
    """The metric records: computed by rank 0 alone from the gathered features, then sent to the others."""
    results = compute() if not group or _is_main() else None
    return _broadcast(results, device) if group else cast(dict, results)


def _timings(batch_size: int, t_gen: float, seconds: float, progress: EvalProgress) -> dict[str, Any]:
    return {"precision": PRECISION, "batch_size": batch_size, "ganforge_version": __version__,
            "generate_seconds": round(t_gen, 3), "seconds": round(seconds, 3),
            "time_to_go": {"estimated_seconds": round(progress.estimate, 3),   # after the first batch
                           "actual_seconds": round(progress.elapsed, 3)}}


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


def _networks(specs, *, group: bool, **build) -> tuple[dict[str, _Network], dict[str, str]]:
    """(the feature networks the metrics need, by key; why each one that cannot run here cannot), each
    network's work shared between the ranks when `group`."""
    networks: dict[str, _Network] = {}
    unavailable: dict[str, str] = {}
    for key in dict.fromkeys(s.network for s in specs):
        try:
            networks[key] = _build_network(key, **build)
        except Unavailable as e:
            unavailable[key] = str(e)
            continue
        if group:
            networks[key].fn = _sharded(networks[key].fn, device=build["device"])
    return networks, unavailable


def _generated_pass(generate, networks, specs, *, n, batch_size, seed, device, real_left, log):
    """Generate n images batch by batch and run each batch through every network: (generated sides,
    generation seconds, seconds per image by step, the progress, estimated after the first batch)."""
    collectors = {k: Collector(set().union(*(s.fake_needs for s in specs if s.network == k))) for k in networks}
    # One CPU generator for the whole pass, seeded once: image i depends on the seed and the batch
    # size only, not on the device or on how many networks run.
    gen = torch.Generator().manual_seed(seed)
    t_gen, done, per_image, progress = 0.0, 0, {}, None
    while done < n:
        b = min(batch_size, n - done)
        t0 = time.perf_counter()
        images, labels = generate(b, gen)
        seconds = {"generate": time.perf_counter() - t0}
        t_gen += seconds["generate"]
        # Checked on every batch: a generate() that returned floats or a short batch would otherwise
        # give a plausible-looking but wrong number, not an error.
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


def _estimate(per_image: dict[str, float], fake_left: int, real_left: dict[str, int], log) -> EvalProgress:
    """Say how long the rest will take (images x the seconds per image just measured); return the progress."""
    total = fake_left * sum(per_image.values()) + sum(m * per_image[k] for k, m in real_left.items())
    progress = EvalProgress(total, log=log)
    if log is not None and total > 0:
        rates = ", ".join(f"{k} {1 / max(t, 1e-9):.1f}" for k, t in per_image.items())
        real = "".join(f" + {m} real through {k}" for k, m in real_left.items())
        log(f"estimate: {fake_left} more generated images{real}, at {rates} images/s measured on the first "
            f"batch here: about {duration(total)}")
    return progress


def make_generate(generator: torch.nn.Module, *, z_dim: int, num_classes: int = 0,
                  device: str | torch.device = "cpu") -> Generate:
    """Adapt a generator G(z, labels) with outputs in [-1, 1] to `evaluate`'s generate(): z ~ N(0, I)
    and, when num_classes > 0, labels uniform over the classes, both drawn from the given (CPU) generator,
    so the images do not depend on the device. Images and labels stay on `device`: the feature
    networks take them there, without a round trip through the host per batch."""
    from ganforge.outputs.model import to_uint8

    dev = torch.device(device)

    @torch.inference_mode()
    def generate(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        # Drawn on the CPU, then moved: the same seed gives the same latents on any device.
        z = torch.randn(batch, z_dim, generator=gen).to(dev)
        labels = torch.randint(0, num_classes, (batch,), generator=gen).to(dev) if num_classes else None
        x = generator(z, labels) if labels is not None else generator(z)
        return to_uint8(x), labels  # the pixels `ganforge sample` would write for these latents

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


__all__ = ["evaluate", "make_generate", "flat_values", "load_network", "context", "resolve_batch_size"]
