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
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ganforge.config import TrainConfig
from ganforge.errors import ConfigError, GanforgeError


_PATIENT: dict = {"group": None}  # the process group of `Dist.patient_gather`, one per process
_PATIENT_TIMEOUT = timedelta(days=1)


@dataclass(frozen=True)
class Dist:
    """This process's place among the torchrun ranks, and every operation the ranks do together.

    With one process (`world_size` 1) each method does nothing and returns its input, so callers
    never branch on whether they run under torchrun.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_name: str = "auto") -> "Dist":
        """Join the torchrun process group when launched by torchrun; one process otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        info = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        if not dist.is_initialized():
            use_nccl = device_name != "cpu" and torch.cuda.is_available()
            if use_nccl:
                torch.cuda.set_device(info.local_rank)
            # torchrun can keep its key-value store across restarts (--max-restarts): without a prefix per
            # attempt a restarted rank may read the dead group's addresses and fail to connect.
            store, _, _ = next(dist.rendezvous("env://"))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group("nccl" if use_nccl else "gloo", store=dist.PrefixStore(f"attempt-{attempt}", store),
                                    rank=info.rank, world_size=world)
        if _PATIENT["group"] is None:
            # Made here, while every rank is at the same point: making it later, when some ranks wait on
            # another's decode, would itself time out.
            _PATIENT["group"] = dist.new_group(backend="gloo", timeout=_PATIENT_TIMEOUT)
        return info

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the ranks, in place (one all-reduce)."""
        if self.enabled:
            dist.all_reduce(values)
        return values

    def agree(self, sums: dict[str, torch.Tensor], counts: dict[str, int],
              flags: list[torch.Tensor]) -> tuple[dict[str, float], list[int]]:
        """One all-reduce and one host sync for a log window: each key's mean over every rank's steps
        (`sums[k]` over `counts[k]` steps on each rank), and on how many ranks each boolean flag is set."""
        keys = list(sums)  # the same keys in the same order on every rank: they run the same steps
        device = flags[0].device
        packed = torch.cat([torch.stack([sums[k].float() for k in keys]) if keys else torch.zeros(0, device=device),
                            torch.tensor([counts[k] for k in keys], dtype=torch.float32, device=device),
                            torch.stack([f.float() for f in flags])])
        values = self.sum(packed).tolist()
        n = len(keys)
        return {k: s / c for k, s, c in zip(keys, values[:n], values[n:2 * n])}, [round(v) for v in values[2 * n:]]

    def average_gradients(self, module: torch.nn.Module) -> None:
        """See `average_gradients`."""
        average_gradients(module, self.world_size)

    def average_buffers(self, *modules: torch.nn.Module) -> None:
        """Average batch-norm running statistics so every rank (and the checkpoint) holds the same model."""
        if self.enabled:
            for b in (b for m in modules for b in m.buffers() if b.is_floating_point()):
                dist.all_reduce(b)
                b.div_(self.world_size)

    def broadcast_modules(self, *modules: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.enabled:
            for m in modules:
                broadcast_module(m)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of a small picklable object, on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's value of a small picklable object, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def patient_gather(self, obj: Any) -> list:
        """`gather`, over a gloo group that waits up to a day instead of the default collective timeout
        (10 minutes under NCCL): for ranks that wait on another rank's long work, such as the one
        decode per host of a large image folder. gloo, because the objects are small host values."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj, group=_PATIENT["group"])
        return out

    def check_in_sync(self, *modules: torch.nn.Module) -> None:
        """Refuse to checkpoint if the ranks' weights have drifted apart (they must be bit-identical)."""
        if not self.enabled:
            return
        h = hashlib.sha256()
        for t in (t for m in modules for t in m.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        if len(set(self.gather(h.hexdigest()))) != 1:
            raise GanforgeError(f"the {self.world_size} ranks hold different weights; refusing to checkpoint")

    def close(self) -> None:
        """Leave the process group once every rank is done."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()  # every group, the patient one included
            _PATIENT["group"] = None

    def command(self, args: str) -> str:
        """The command line that starts this run's processes again with ganforge `args` (e.g. to resume)."""
        if not self.enabled:
            return f"ganforge {args}"
        nodes = self.world_size // max(self.local_world_size, 1)
        launcher = (f"torchrun --standalone --nproc_per_node={self.local_world_size}" if nodes == 1 else
                    f"torchrun --nnodes={nodes} --nproc_per_node={self.local_world_size} <rendezvous options>")
        return f"{launcher} -m ganforge {args}"


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
    return Dist.from_env(device_name)


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


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers of `module` on every rank."""
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop at the end of its log window and checkpoint.

    The loop reads `signum` at each window end (agreed across ranks). A second signal at least a
    second later quits at once, with the exit code of a killed process (130 for SIGINT, 143 for
    SIGTERM); one sooner is the same request arriving twice (torchrun forwards the terminal's Ctrl-C
    to workers that already got it).
    """

    def __init__(self) -> None:
        self.signum: int = 0
        self._since = 0.0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum and time.monotonic() - self._since >= 1.0:
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        if not self.signum:
            self.signum, self._since = signum, time.monotonic()
            print(f"\nreceived {signal.Signals(signum).name}: stopping at the end of this log window and writing "
                  "a checkpoint (send it again to quit at once)", file=sys.stderr, flush=True)

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
