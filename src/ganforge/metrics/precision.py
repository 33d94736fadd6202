"""Strict float32 for the feature networks, whatever training set globally.

FID, KID and the Inception Score are defined on features computed in IEEE float32. Training turns
TF32 on for CUDA matmuls and cuDNN convolutions (`runtime.configure`), which on Ampere and newer
GPUs rounds the inputs of every product to a 10-bit mantissa: Inception features then differ from
the protocol's by far more than float32 round-off, and reference statistics computed that way must
not be mixed with CPU ones. `strict_fp32()` turns TF32 (and any reduced matmul precision, which on
a CPU may mean bf16 products) off for the duration of a feature pass and puts every flag back
afterwards, so training keeps its speed.

PyTorch has two ways to set these flags (`allow_tf32` and `set_float32_matmul_precision`, and
per-backend `fp32_precision` attributes); reading them after they were mixed raises. The state is
therefore read defensively and restored through the same interface it was read from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional, TypedDict, TypeVar, cast

import torch

PRECISION = "fp32"   # what every metric record and reference-cache key says the features were computed in


def maths_device(device: str | torch.device) -> torch.device:
    """Where float64 metric maths can run next to `device`: a CUDA device itself, else the CPU (MPS has
    no float64)."""
    device = torch.device(device)
    return device if device.type in ("cuda", "cpu") else torch.device("cpu")


def float64_on_device(x: torch.Tensor) -> torch.Tensor:
    """x as float64 where it is, or on the CPU when its device has no float64."""
    return x.to(maths_device(x.device), torch.float64)


_T = TypeVar("_T")


def _read(get: Callable[[], _T]) -> Optional[_T]:
    try:
        return get()
    except RuntimeError:   # the legacy and the new API were mixed: this reading is undefined
        return None


class Flags(TypedDict):
    """`flags()`: each None where it could not be read."""
    cuda_matmul_allow_tf32: Optional[bool]
    cudnn_allow_tf32: Optional[bool]
    float32_matmul_precision: Optional[str]


def flags() -> Flags:
    """The settings that decide float32 matmul/convolution precision, as this process has them now."""
    # cuda.matmul answers by name (__getattr__), so pyright cannot tell that allow_tf32 is a bool.
    return Flags(cuda_matmul_allow_tf32=_read(lambda: cast(bool, torch.backends.cuda.matmul.allow_tf32)),
                 cudnn_allow_tf32=_read(lambda: torch.backends.cudnn.allow_tf32),
                 float32_matmul_precision=_read(torch.get_float32_matmul_precision))


def _backend_precisions() -> dict[str, str]:
    """The per-backend `fp32_precision` of newer PyTorch (absent on older versions)."""
    out = {}
    for name, obj in (("cuda", torch.backends.cuda.matmul), ("mkldnn", getattr(torch.backends, "mkldnn", None))):
        matmul = obj if name == "cuda" else getattr(obj, "matmul", None)
        try:
            value = getattr(matmul, "fp32_precision", None)
        except (RuntimeError, AttributeError):   # older PyTorch: cuda.matmul raises for unknown names
            value = None
        if isinstance(value, str):
            out[name] = value
    return out


@contextmanager
def strict_fp32(device_type: str = "cpu") -> Iterator[None]:
    """IEEE float32 matmuls and convolutions, and no autocast on `device_type`, inside the block."""
    saved, backends = flags(), _backend_precisions()
    reset_precision = False
    try:
        _set_matmul_tf32(False)
        torch.backends.cudnn.allow_tf32 = False
        # Only when TF32 off is not enough (a "medium" precision allows bf16 products, also on a CPU):
        # setting the precision touches every backend, so it is avoided when it would change nothing.
        if _read(torch.get_float32_matmul_precision) != "highest":
            reset_precision = True
            torch.set_float32_matmul_precision("highest")
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        if reset_precision:
            _restore_precision(saved["float32_matmul_precision"], backends)
        if saved["cuda_matmul_allow_tf32"] is not None:
            _set_matmul_tf32(saved["cuda_matmul_allow_tf32"])
        if saved["cudnn_allow_tf32"] is not None:
            torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]


def _set_matmul_tf32(on: bool) -> None:
    # Written only when it differs: a needless write can leave the two APIs mixed.
    if _read(lambda: torch.backends.cuda.matmul.allow_tf32) != on:
        torch.backends.cuda.matmul.allow_tf32 = on


def _restore_precision(precision: Optional[str], backends: dict[str, str]) -> None:
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
        return
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)   # a mixed state: per backend
    for name, value in backends.items():
        target = torch.backends.cuda.matmul if name == "cuda" else matmul
        if target is not None:  # a backend this build lacks has nothing to restore
            target.fp32_precision = value
