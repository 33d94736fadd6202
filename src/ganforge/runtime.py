"""Where and how a run executes: device, threads, determinism, torchrun ranks and RNG state.

Under `torchrun`, RANK / WORLD_SIZE / LOCAL_RANK are set; we join the process group (NCCL on
CUDA, gloo on CPU) and average gradients across ranks after each backward pass.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ganforge.config import TrainConfig
from ganforge.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, *, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device=mps: MPS is not available on this machine; use cpu or auto")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA, or a CPU with native bf16 (AVX512-BF16/AMX).

    Without native support oneDNN emulates bf16 and it is slower than fp32, so `amp=auto` stays fp32.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    info = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_nccl = device_name != "cpu" and torch.cuda.is_available()
        if use_nccl:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return info


def cpu_threads(requested: int = 0, *, world_size: int = 1) -> int:
    """`requested`, or this process's share of the cores it may run on (ranks split them evenly)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return requested or max(1, cores // world_size)


def configure(cfg: TrainConfig, *, world_size: int = 1) -> None:
    """Threads and determinism. CPU threads are split between ranks so cores are not oversubscribed."""
    torch.set_num_threads(cpu_threads(cfg.threads, world_size=world_size))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG that decides the future, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "gauss": gauss},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """All-reduce and average the gradients of `module` in one flat buffer.

    Done by hand (as StyleGAN2-ADA does) rather than with DDP's hooks because a GAN step calls
    D several times before one backward (real, fake, and the gradient-penalty double backward).
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if world_size <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(module: torch.nn.Module, world_size: int) -> None:
    """Average batch-norm running statistics so every rank (and the checkpoint) holds the same model."""
    if world_size <= 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world_size)


def broadcast_module(module: torch.nn.Module) -> None:
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def check_in_sync(modules: list[torch.nn.Module], info: Dist) -> None:
    """Refuse to checkpoint if the ranks' weights have drifted apart (they must be bit-identical)."""
    if not info.enabled:
        return
    h = hashlib.sha256()
    for m in modules:
        for t in m.state_dict().values():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digests: list = [None] * info.world_size
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        from ganforge.errors import GanforgeError

        raise GanforgeError(f"the {info.world_size} ranks hold different weights; refusing to checkpoint")


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to finish its step and checkpoint; a second SIGINT quits at once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.reason:
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.reason = f"received {signal.Signals(signum).name}"
        print(f"\n{self.reason}: finishing this step and writing a checkpoint (press Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
