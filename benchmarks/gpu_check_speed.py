"""gpu_check steps 1 and 2: the machine (versions, measured matmul peaks) and training speed per precision.

The timing, the FLOP count and the matmul peak are benchmarks.train_speed's; this module only
chooses the cases (preset x precision x compile), bounds each by time so that the whole check fits
its budget, and relates each case's model FLOP/s to the peak of the precision it ran in.
"""

from __future__ import annotations

import gc
import math
import platform
import shutil
import statistics
import subprocess
import time
from typing import Any, Optional

import torch

from benchmarks.quality import cpu_model
from benchmarks.train_speed import flops_per_image, ganforge_images_per_s, make_trainer, matmul_peak
from ganforge import precision
from ganforge.config import preset_config
from ganforge.errors import ConfigError

PRESETS = ("cifar10-best", "mnist-dcgan64")
AMPS = ("off", "bf16", "fp16")           # train.amp values; "off" is fp32 (TF32 on, as training runs it)
# One thread: on a CPU that other processes share, OpenMP threads wait at every barrier for a peer
# that was preempted, and a step took 60 times longer with 2 threads than with 1 (2 shared cores).
CPU_SHRINK = ["model.g_channels=8", "model.d_channels=8", "train.compile_backend=aot_eager", "train.threads=1"]
CPU_LIMIT = 512  # digits per speed case on a CPU: 8 steps an epoch at the presets' batch of 64


def _gpu_driver() -> Optional[str]:
    """The NVIDIA driver version; torch does not report it, nvidia-smi does (absent in some containers)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _peak(dtype: torch.dtype, device: torch.device, *, tf32: bool = False) -> dict:
    """One matmul peak; a dtype the hardware cannot multiply is recorded, not fatal: the speed cases
    of that precision then have no share of peak, and the rest of the check still runs."""
    n = 8192 if device.type == "cuda" else 1024  # large enough that launch overhead is noise on a GPU
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        return {"flops": matmul_peak(dtype, device, n=n), "n": n}
    except RuntimeError as exc:
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def machine(ctx) -> dict:
    device = ctx.device
    info: dict[str, Any] = {"device": str(device), "cpu": cpu_model(), "threads": torch.get_num_threads(),
                            "torch": torch.__version__,
                            "python": platform.python_version(), "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    peaks: dict[str, dict] = {"fp32": _peak(torch.float32, device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                    memory_bytes=props.total_memory, multiprocessors=props.multi_processor_count,
                    driver=_gpu_driver())
        peaks["fp32_tf32"] = _peak(torch.float32, device, tf32=True)
    else:
        info.update(gpu=None, cpu_native_bf16=precision.cpu_native_bf16())
        peaks["fp32_tf32"] = {"skipped": "TF32 is a mode of NVIDIA tensor cores; a CPU's fp32 peak is 'fp32'"}
    peaks["bf16"] = _peak(torch.bfloat16, device)
    if device.type == "cuda":
        peaks["fp16"] = _peak(torch.float16, device)
    else:
        peaks["fp16"] = {"skipped": "ganforge trains fp16 only on CUDA (train.amp=fp16 is refused on a CPU)"}
    for name, entry in peaks.items():
        if name != "fp32_tf32" or device.type == "cuda":
            entry["native"], entry["why"] = _native(name, device)
    info["peaks"] = peaks
    return info


def _native(name: str, device: torch.device) -> tuple[bool, str]:
    """Whether `name` (fp32, fp32_tf32, bf16, fp16) runs in hardware here, and what says so."""
    if name == "fp32":
        return True, "fp32"
    if device.type == "cpu":
        if name == "bf16":
            ok = precision.cpu_native_bf16()
            return ok, "AVX-512 BF16 / AMX" if ok else "no AVX-512 BF16 or AMX: oneDNN emulates bf16"
        return False, "not a CPU precision"
    major, minor = precision.cuda_capability(device)
    cc = f"compute capability {major}.{minor}"
    need = {"fp32_tf32": 8, "bf16": 8, "fp16": 7}[name]  # Ampere brought TF32 and bf16; Volta fp16 tensor cores
    return major >= need, f"{cc} ({'>=' if major >= need else '<'} {need}.0 for {name} tensor cores)"


def _case_sets(ctx, preset: str, amp: str, compiled: bool) -> list[str]:
    sets = [f"train.amp={amp}", f"train.compile={str(compiled).lower()}", f"train.device={ctx.device}"]
    if ctx.cpu:  # the preset's shape of work on the shipped digits, 1 channel, narrow nets
        size = preset_config(preset).data.size or 32
        return [*sets, "data.name=mnist-5k", "data.root=none", f"data.size={size}", f"data.limit={CPU_LIMIT}",
                *CPU_SHRINK]
    return [*sets, f"data.root={ctx.data_dir}"] if ctx.data_dir else sets


def _timed(tr, *, seconds: float, warmup: int) -> dict:
    """Images/s over about `seconds`: windows double in length until one lasts a quarter of the budget
    (which also rides out cuDNN's autotuning and oneDNN's first calls), then three of that length are
    timed and their median kept. The warm-up, where torch.compile compiles, is timed apart."""
    _, warmup_s = ganforge_images_per_s(tr, warmup=warmup, windows=0, window_steps=0)
    steps, start = 2, time.perf_counter()
    while True:
        rate = ganforge_images_per_s(tr, warmup=0, windows=1, window_steps=steps)[0][0]
        if steps * tr.cfg.train.batch_size / rate >= seconds / 4 or steps >= 4096:
            break
        steps *= 2
    sizing_s, start = time.perf_counter() - start, time.perf_counter()
    rates, _ = ganforge_images_per_s(tr, warmup=0, windows=3, window_steps=steps)
    return {"images_per_s": statistics.median(rates), "windows": rates, "window_steps": steps,
            "timed_seconds": time.perf_counter() - start, "sizing_seconds": sizing_s,
            "warmup_seconds": warmup_s, "warmup_steps": warmup}


def _release(tr) -> None:
    if tr is not None and tr.log is not None:
        tr.log.close()


def _fresh_peak(device: torch.device) -> None:
    """Free the previous case (a trainer and its compiled graphs hold reference cycles, which only the
    collector breaks) before the peak counter restarts, so a case's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def speed_case(ctx, preset: str, amp: str, compiled: bool, flops: Optional[float]) -> dict:
    name = "fp32" if amp == "off" else amp
    case: dict[str, Any] = {"preset": preset, "amp": amp, "precision": name, "compile": compiled}
    try:
        precision.choose(amp, ctx.device)
    except ConfigError as exc:  # the reason is precision's own refusal, e.g. fp16 on a CPU
        return {**case, "skipped": str(exc)}
    case["native"], case["native_why"] = _native(name, ctx.device)
    if compiled:
        torch._dynamo.reset()  # a fresh compile per case: its warm-up time is this case's own
    cuda = ctx.device.type == "cuda"
    _fresh_peak(ctx.device)
    tr = None
    try:
        tr = make_trainer(preset, _case_sets(ctx, preset, amp, compiled), run_dir=ctx.new_dir(f"speed-{preset}"))
        case["batch_size"], case["steps_per_epoch"] = tr.cfg.train.batch_size, tr.batches.steps_per_epoch
        case.update(_timed(tr, seconds=ctx.case_seconds, warmup=5 if compiled else 2))
        case["peak_memory_bytes"] = torch.cuda.max_memory_allocated(ctx.device) if cuda else None
    finally:
        _release(tr)
    # fp32 training runs with TF32 on (runtime.configure), so on a GPU its ceiling is the TF32 peak.
    case["peak_used"] = ("fp32_tf32" if cuda else "fp32") if amp == "off" else amp
    peak = ctx.peak(case["peak_used"])
    if flops and peak:
        case["share_of_peak"] = flops * case["images_per_s"] / peak
    return case


def preset_flops(ctx, preset: str) -> float:
    """Model FLOPs per image of one training step; the same in every precision, so counted once, eager."""
    tr = make_trainer(preset, _case_sets(ctx, preset, "off", False), run_dir=ctx.new_dir(f"flops-{preset}"))
    try:
        return flops_per_image(tr)
    finally:
        _release(tr)


def speed(ctx) -> dict:
    """Every preset x precision x compile case; one case that raises is recorded and the others still run.
    Eager cases first: if compiling is so slow that the step's time budget runs out, what is left out
    (and recorded as such) is compiled cases."""
    out: dict[str, Any] = {"presets": {p: {"flops_per_image": preset_flops(ctx, p), "cases": []} for p in PRESETS},
                           "case_seconds": ctx.case_seconds, "budget_seconds": ctx.speed_budget, "failed_cases": []}
    deadline = time.monotonic() + ctx.speed_budget if ctx.speed_budget else math.inf
    for compiled in (False, True):
        for preset in PRESETS:
            entry = out["presets"][preset]
            for amp in AMPS:
                case = {"preset": preset, "amp": amp, "compile": compiled}
                if time.monotonic() > deadline:
                    entry["cases"].append({**case, "skipped": f"the speed step's budget of {ctx.speed_budget:.0f} s "
                                                              f"was spent (--speed-budget 0 lifts it)"})
                    continue
                try:
                    entry["cases"].append(speed_case(ctx, preset, amp, compiled, entry["flops_per_image"]))
                except Exception as exc:  # noqa: BLE001 (recorded; the step fails at the end)
                    entry["cases"].append({**case, "error": f"{type(exc).__name__}: {exc}"})
                    out["failed_cases"].append(f"{preset} amp={amp} compile={compiled}")
    if out["failed_cases"]:
        raise CaseFailures(out)
    return out


class CaseFailures(Exception):
    """Some speed cases failed: carries the partial result, so the record keeps the cases that ran."""

    def __init__(self, result: dict):
        super().__init__(f"{len(result['failed_cases'])} case(s) failed: {'; '.join(result['failed_cases'])}")
        self.result = result
