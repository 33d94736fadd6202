"""Where and how a run executes: device, threads, determinism, torchrun ranks and RNG state.

Under `torchrun`, RANK / WORLD_SIZE / LOCAL_RANK are set; we join the process group (NCCL on
CUDA, gloo on CPU); `ganforge.training.gradsync` averages the gradients while backward runs.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional, cast

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
    def from_env(cls, device_name: str = "auto") -> Dist:
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

    def agree(self, sums: dict[str, torch.Tensor], counts: dict[str, int | torch.Tensor],
              flags: list[torch.Tensor]) -> tuple[dict[str, float], list[int]]:
        """One all-reduce and one host sync for a log window: each key's mean over every rank's steps
        (`sums[k]` over `counts[k]` steps on each rank), and on how many ranks each boolean flag is set.
        A count may be a device tensor (steps whose value was finite, under fp16), so nothing syncs early."""
        keys = list(sums)  # the same keys in the same order on every rank: they run the same steps
        device = flags[0].device
        packed = torch.cat([torch.stack([sums[k].float() for k in keys]) if keys else torch.zeros(0, device=device),
                            torch.stack([torch.as_tensor(counts[k], dtype=torch.float32, device=device) for k in keys])
                            if keys else torch.zeros(0, device=device),
                            torch.stack([f.float() for f in flags])])
        values = self.sum(packed).tolist()
        n = len(keys)
        means = {k: s / c if c else math.nan for k, s, c in zip(keys, values[:n], values[n:2 * n])}
        return means, [round(v) for v in values[2 * n:]]

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


def pick_device(name: str, *, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device `train.device` names. Under torchrun every rank takes the GPU of its LOCAL_RANK (the
    process group was set up so, `Dist.from_env`), so a fixed `cuda:N` there is refused."""
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
    if name.startswith("cuda:") and world_size > 1:
        raise ConfigError(f"train.device={name} under torchrun: each rank uses the GPU of its LOCAL_RANK; "
                          f"use train.device=cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r}: choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_threads(requested: int = 0, *, world_size: int = 1) -> int:
    """`requested`, or this process's share of the cores it may run on (ranks split them evenly)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return requested or max(1, cores // world_size)


def configure(cfg: TrainConfig, *, world_size: int = 1) -> None:
    """Threads and determinism. CPU threads are split between ranks so cores are not oversubscribed.

    deterministic=true makes PyTorch raise on an operation without a deterministic kernel (on CUDA,
    e.g. the bilinear upsampling backward) rather than warn: a warning would leave the promised
    bit-identical resume silently broken. The trainer turns that error into one line naming the
    operation (`nondeterministic_op`). TF32 stays on for training's matmuls and convolutions (fast
    on Ampere and newer, and deterministic); the evaluation's feature networks turn it off.
    """
    torch.set_num_threads(cpu_threads(cfg.threads, world_size=world_size))
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.deterministic:  # cuBLAS is deterministic only with a fixed workspace, read when CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


_NONDETERMINISTIC = "does not have a deterministic implementation"


def nondeterministic_op(exc: BaseException) -> Optional[str]:
    """The operation PyTorch names when deterministic mode refuses it ("upsample_bilinear2d_backward_out_cuda
    does not have a deterministic implementation, but you set ..."), or None for any other error."""
    text = str(exc)
    if _NONDETERMINISTIC not in text:
        return None
    words = text.split(_NONDETERMINISTIC)[0].split()
    return words[-1] if words else "an operation"


def deterministic_conflict(cfg: Any, device: torch.device) -> Optional[str]:
    """A setting that `train.deterministic=true` cannot make deterministic on `device`, found before any
    work (the rest surface at the first step, through `nondeterministic_op`)."""
    if not cfg.train.deterministic or device.type != "cuda":
        return None
    archs = {cfg.model.arch, cfg.model.arch_d or cfg.model.arch}
    if "upsample" in archs and cfg.model.upsample == "bilinear":
        return ("train.deterministic=true: model.upsample=bilinear needs upsample_bilinear2d_backward, which has "
                "no deterministic CUDA kernel; use model.upsample=nearest or train.deterministic=false")
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: Optional[torch.device] = None) -> dict:
    """Every RNG that decides the future, in a form `torch.load(weights_only=True)` accepts.

    Of the CUDA generators only this process's device is kept: a rank draws on its own GPU alone,
    and the run may resume where a different number of GPUs is visible.
    """
    # The global RandomState is an MT19937, whose legacy state is this 5-tuple; the stubs also allow the
    # dict of other bit generators.
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "gauss": gauss},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: Optional[torch.device] = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda":
        return  # saved or resumed on a CPU: the CUDA generator keeps its seed
    if isinstance(cuda, (list, tuple)):  # checkpoints of 0.1.0 kept one state per visible GPU
        cuda = cuda[min(device.index or 0, len(cuda) - 1)]
    torch.cuda.set_rng_state(cuda, device)


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

    def install(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
