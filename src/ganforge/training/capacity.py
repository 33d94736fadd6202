"""How much memory a training run needs, known before anything is allocated or decoded.

`estimate` builds G and D on PyTorch's meta device (shapes without storage: a 800M-parameter
model costs nothing to build there) and counts:

- the training state, all fp32: G and D weights and buffers, the EMA copy of G, one gradient per
  parameter, and the optimizer's moments (Adam 2 per parameter, SGD with momentum 1, plain SGD 0);
- the activations of one training step at `train.batch_size`: one forward pass of G and of D on
  meta tensors, every new tensor storage an operation makes counted once (functional ops such as
  ResNet's interpolations included), summed over the passes whose graphs are alive together.

`check_fits` compares the sum with the device (CUDA: its total and free memory; CPU and MPS:
host RAM) and refuses in one line, naming the settings that shrink it. The dataset itself, which
`DeviceBatches` also puts on the device, is not counted: its size is known only after decoding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ganforge.config import Config
from ganforge.errors import ConfigError

FP32 = 4
# The forward allocations counted here are close to what autograd keeps for backward (measured on
# CPU for one real step at batch 32, tests/test_capacity.py: they are 0.93-1.43 times the peak of the
# saved tensors; 1.0 for dcgan, 1.43 for resnet, whose forward makes temporaries it does not keep).
# Backward also holds the gradients of one or two layers' activations at a time, which that
# measurement leaves out: the 1.25 covers them without the 2-3x of a worst case that would refuse
# runs that fit.
BACKWARD_FACTOR = 1.25
# Kept free on a GPU for the CUDA context, cuDNN workspaces and the allocator's fragmentation.
CUDA_MARGIN = 0.10
# Kept free in host RAM for the decoded dataset, Python and the libraries.
HOST_MARGIN = 0.10
GIB = 2**30


@dataclass(frozen=True)
class Estimate:
    g_params: int
    d_params: int
    state_bytes: int                  # weights, EMA copy, gradients, optimizer moments (fp32)
    activation_bytes: Optional[int]   # one training step; None when the models cannot run on meta
    batch_size: int
    d_batch_norm: bool = False        # D normalises over the batch (which per-sample gradient penalties forbid)

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + (self.activation_bytes or 0)

    def params_text(self, sep: str = ", ") -> str:
        return f"G {_millions(self.g_params)}{sep}D {_millions(self.d_params)} parameters"

    def summary(self) -> str:
        """The start-up line: `model: G 3.6M, D 2.8M parameters; about 0.3 GiB per step at batch 64
        (estimate)`."""
        what = "per step" if self.activation_bytes is not None else "for weights and optimizer state"
        return (f"model: {self.params_text()}; about {_gib(self.total_bytes)} {what} at batch {self.batch_size} "
                f"(estimate)")


def _millions(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n < 1e6 else f"{n / 1e6:.1f}M"


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / GIB:.2f} GiB"


# ----------------------------------------------------------------------------- estimate


def estimate(cfg: Config, channels: int, size: int, num_classes: int, *, bf16: bool = False) -> Estimate:
    """Parameters, training state and one step's activations of `cfg`'s models for `channels` x `size`^2
    images; `bf16` halves the activations (autocast). Raises the models' own ConfigErrors."""
    from ganforge.models import build_models

    kw = dict(channels=channels, size=size, num_classes=num_classes)
    on_meta = True
    try:
        with torch.device("meta"):
            g, d = build_models(cfg.model, **kw)
    except (NotImplementedError, RuntimeError):
        # A layer that reads its weights while being built (e.g. `.item()`) cannot be built on meta:
        # build it for real. The trainer builds these same models next anyway, so this costs the
        # time of one build, and the global RNG is restored so the trainer's weights are unchanged.
        on_meta = False
        with torch.random.fork_rng(devices=[]):
            g, d = build_models(cfg.model, **kw)
    activations = _step_activations(cfg, g, d, channels, size, num_classes) if on_meta else None
    if activations is not None and bf16:
        activations //= 2
    return Estimate(g_params=_count(g), d_params=_count(d), state_bytes=_state_bytes(cfg, g, d),
                    activation_bytes=activations, batch_size=cfg.train.batch_size,
                    d_batch_norm=any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules()))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _state_bytes(cfg: Config, g: nn.Module, d: nn.Module) -> int:
    """fp32 weights + buffers of G and D, the EMA copy of G, a gradient and the optimizer moments per parameter."""
    buffers = sum(b.numel() for m in (g, d) for b in m.buffers() if b.is_floating_point())
    params = _count(g) + _count(d)
    o = cfg.optim
    moments = 2 if o.name == "adam" else (1 if o.momentum > 0 else 0)
    ema = _count(g) + sum(b.numel() for b in g.buffers() if b.is_floating_point()) if cfg.model.ema_kimg > 0 else 0
    return FP32 * (params * (2 + moments) + buffers + ema)


def _step_activations(cfg: Config, g: nn.Module, d: nn.Module, channels: int, size: int,
                      num_classes: int) -> Optional[int]:
    """Bytes of the activations alive at the peak of one step, from forward passes on meta tensors.

    The peak is the discriminator's backward: G's graph (kept for the generator step that follows),
    D on the real batch and D on the fake batch. WGAN-GP adds a D pass on the interpolates whose
    gradient graph is kept (about two passes); R1 and R2 each keep one more graph of a D pass.
    """
    b = cfg.train.batch_size
    labels = torch.zeros(b, dtype=torch.long, device="meta") if num_classes and cfg.model.conditional else None
    try:
        g_bytes = forward_bytes(g, torch.empty(b, cfg.model.z_dim, device="meta"), labels)
        d_bytes = forward_bytes(d, torch.empty(b, channels, size, size, device="meta"), labels)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: state only
        return None
    from ganforge.training.losses import LOSSES

    d_passes = 2 + (2 if LOSSES.get(cfg.loss.name).gradient_penalty else 0)
    d_passes += (cfg.loss.r1_gamma > 0) + (cfg.loss.r2_gamma > 0)
    # DP-SGD (training/privacy.py): Opacus keeps one gradient per image and D parameter for the term
    # being clipped, and its convolution grad sampler makes a temporary of about that size again.
    per_sample = 2 * FP32 * b * _count(d) if cfg.privacy.enabled else 0
    return int(BACKWARD_FACTOR * (g_bytes + d_passes * d_bytes)) + per_sample


def forward_bytes(module: nn.Module, *inputs) -> int:
    """Bytes of every new tensor storage made by one forward of `module` (its parameters and buffers
    excluded), each storage counted once: views and in-place results (ReLU(inplace=True)) share one.

    A dispatch mode sees every aten operation, the functional ones inside `forward` included (ResNet's
    interpolations and activations), where forward hooks would see only the outputs of modules.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    own = {t.untyped_storage()._cdata for t in (*module.parameters(), *module.buffers())}
    own.update(t.untyped_storage()._cdata for t in inputs if isinstance(t, torch.Tensor))
    seen: dict[int, torch.UntypedStorage] = {}  # holding the storages keeps their ids from being reused

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    if s._cdata not in own:
                        seen.setdefault(s._cdata, s)
            return out

    with Count():
        module(*inputs)
    return sum(s.nbytes() for s in seen.values())


# ----------------------------------------------------------------------------- device check


def device_capacity(device: torch.device, *, processes: int = 1) -> Optional[tuple[int, str]]:
    """(bytes a run may use, what they are, for the message), or None when the device says nothing."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        usable = int(total * (1 - CUDA_MARGIN))
        what = f"{_gib(usable)} usable on cuda:{index} ({_gib(total)}, less {CUDA_MARGIN:.0%} for the CUDA context)"
        try:
            free, _ = torch.cuda.mem_get_info(index)
        except RuntimeError:
            free = None
        if free is not None and free < usable:
            usable = free
            what = f"{_gib(free)} free on cuda:{index} (of its {_gib(total)}; other processes hold the rest)"
        return usable, what
    if device.type in ("cpu", "mps"):  # MPS shares the host's memory
        available = host_available()
        if available is None:
            return None
        usable = int(available * (1 - HOST_MARGIN) / processes)
        share = f", shared by {processes} processes" if processes > 1 else ""
        return usable, f"{_gib(usable)} usable of the {_gib(available)} of RAM available{share}"
    return None


def host_available() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), or psutil's figure where installed; None when neither."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_fits(cfg: Config, est: Estimate, device: torch.device, *, processes: int = 1) -> None:
    """Refuse, in one line, a run whose estimate exceeds what `device` can hold."""
    capacity = device_capacity(device, processes=processes)
    if capacity is None or est.total_bytes <= capacity[0]:
        return
    what = ("weights, optimizer state and activations" if est.activation_bytes is not None
            else "weights and optimizer state")
    raise ConfigError(f"model: {est.params_text(' + ')}, about {_gib(est.total_bytes)} for {what} at batch "
                      f"{est.batch_size} — more than the {capacity[1]}; lower model.g_channels/model.d_channels, "
                      f"data.size or train.batch_size")


# ----------------------------------------------------------------------------- the trainer's calls


def check_start(cfg: Config, *, channels: int, size: int, num_classes: int, device: torch.device, dist,
                half_precision: bool) -> Estimate:
    """Estimate, print the start-up line on rank 0, and refuse a run that cannot fit on `device`.
    half_precision: the step runs under bf16 or fp16 autocast (2-byte activations)."""
    est = estimate(cfg, channels, size, num_classes, bf16=half_precision)
    check_fits(cfg, est, device, processes=dist.local_world_size if device.type != "cuda" else 1)
    if dist.is_main:
        print(est.summary(), flush=True)
    return est


def save_record(est: Estimate, run_dir: Path) -> Path:
    """`estimate.json` in the run folder: the figures of the start-up line, in bytes."""
    from ganforge import fsutil

    record = {**asdict(est), "total_bytes": est.total_bytes, "backward_factor": BACKWARD_FACTOR}
    return fsutil.write_text(run_dir / "estimate.json", json.dumps(record, indent=1) + "\n")
