"""Mixed precision chosen by what the hardware does natively, and the loss scaling fp16 needs.

`train.amp=auto` picks, per device:
- **bf16** where it is native: CUDA compute capability 8.0 and later (A100, RTX 30xx and newer),
  and CPUs with AVX-512 BF16 or AMX tiles. bf16 keeps fp32's exponent range, so no loss scaling.
- **fp16 with a GradScaler** on older CUDA cards with tensor cores (compute capability 7.x: V100,
  T4, RTX 20xx). There bf16 is emulated and slower than fp32, while fp16 runs on tensor cores; its
  narrow exponent range needs the loss scaled up before backward and the gradients unscaled before
  the step, and a step whose gradients overflowed is skipped (Micikevicius et al. 2018, "Mixed
  Precision Training").
- **fp32** everywhere else (Pascal and older GPUs, CPUs with only AVX2, Apple MPS).

Measured on CPUs (README, `benchmarks/records/`): with native bf16 the demo trains in 77 s, in
91 s without; on an AVX2-only CPU oneDNN emulates bf16 and it is slower than fp32.

Gradient penalties (R1, R2, WGAN-GP) differentiate D's output with respect to its input inside the
loss. Under fp16 that inner gradient underflows like any other, so it is taken of the *scaled*
output and divided by the scale before it is squared (the recipe of PyTorch's AMP notes).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ganforge.errors import ConfigError

CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Precision:
    """How one device computes a training step: the autocast dtype (None: fp32) and why it was chosen."""

    name: str                 # "bf16" | "fp16" | "fp32"
    reason: str

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def scaled(self) -> bool:
        """Whether losses are scaled (fp16 only: bf16 and fp32 have fp32's exponent range)."""
        return self.name == "fp16"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A loss scaler for one optimizer; disabled (a no-op that still has a state) unless fp16."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def cpu_native_bf16() -> bool:
    """AVX-512 BF16 or AMX tiles: bf16 matmuls and convolutions run natively in oneDNN."""
    cpu: Any = getattr(torch, "cpu", None)  # private probes, absent in some PyTorch versions (caught below)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def native(device: torch.device) -> Precision:
    """What `amp=auto` runs on this device."""
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        cc = f"compute capability {major}.{minor}"
        if major >= 8:
            return Precision("bf16", f"{cc}: native bf16")
        if major == 7:
            return Precision("fp16", f"{cc}: tensor cores run fp16, bf16 would be emulated")
        return Precision("fp32", f"{cc}: no tensor cores")
    if device.type == "cpu":
        if cpu_native_bf16():
            return Precision("bf16", "CPU with AVX-512 BF16 / AMX")
        return Precision("fp32", "CPU without native bf16 (it would be emulated and slower than fp32)")
    return Precision("fp32", f"{device.type}: fp32")


def choose(amp: str, device: torch.device) -> Precision:
    """The precision `train.amp` asks for on `device`, or one line saying why it cannot help there."""
    if amp not in CHOICES:
        raise ConfigError(f"train.amp={amp!r}: choose one of {', '.join(CHOICES)}")
    if amp == "auto":
        return native(device)
    if amp == "off":
        return Precision("fp32", "train.amp=off")
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 on {device.type}: fp16 with loss scaling pays off only on CUDA GPUs; "
                          f"use train.amp=auto, bf16 or off")
    if amp == "bf16" and device.type == "mps":
        raise ConfigError("train.amp=bf16 on mps: use train.amp=auto or off")
    return Precision(amp, f"train.amp={amp}")


def unscale(grad: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> torch.Tensor:
    """A gradient taken of a scaled output, back at its true size (a no-op without fp16 scaling)."""
    if scaler is None or not scaler.is_enabled():
        return grad
    # The scale as a device tensor: `get_scale()` would wait for the device at every penalty.
    return grad.float() / scale_tensor(scaler).float()


def scale_tensor(scaler: torch.amp.GradScaler) -> torch.Tensor:
    """An enabled scaler's current loss scale, as a device tensor (no wait for the device)."""
    s = scaler._get_scale_async()
    # The scaler creates its scale at its first `scale()`: every caller reads it after scaling a loss.
    assert s is not None, "the loss scale is read before any loss was scaled"
    return s


def scale(value: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> torch.Tensor:
    if scaler is None or not scaler.is_enabled():
        return value
    return scaler.scale(value)
