"""The feature networks of an evaluation: built once per process, run in strict float32, sharded
under torchrun.

`load_network` builds the Inception network (Heusel et al. 2017's FID features, `metrics.inception`)
or a shipped classifier (`metrics.classifier`) once per process and file; `context` says which
can run here without loading them, which is how `ganforge eval` picks its default metrics; under
torchrun `_sharded` splits each batch between the ranks and gathers the features back in order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from ganforge.metrics.definitions import CLASSIFIER, INCEPTION, Context, Unavailable
from ganforge.metrics.precision import PRECISION, maths_device, strict_fp32


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
        n, per = len(images), -(-len(images) // world)  # per: ceil(n / world) images each
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
        # the record says which file gave the features: the two give the same pool_3, only one has logits
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
