"""gpu_check steps 3 to 5, each through the `ganforge` command as a user runs it: exact resume after
SIGKILL, the data placements, and a short cifar10-best training with its FID.

Steps 3 and 4 share one short deterministic training (`short_run`): the preset, the overrides
and, on the CPU, the shrink to narrow nets on the shipped digits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from benchmarks.gpu_check_speed import CPU_SHRINK, speed_case
from benchmarks.train_speed import make_trainer
from ganforge import precision
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint

PRESET = "cifar10-best"
TIMEOUT_S = 600  # one subprocess; far above what any of them needs, so only a hang reaches it


def base_sets(ctx) -> list[str]:
    """The overrides every run of these steps shares: the device, the data, and on a CPU the shrink."""
    sets = [f"train.device={ctx.device}"]
    if ctx.cpu:  # the preset at 32 px on 1-channel digits (its models take any channel count)
        return [*sets, "data.name=mnist-5k", "data.root=none", "data.size=32", *CPU_SHRINK]
    return [*sets, f"data.root={ctx.data_dir}"] if ctx.data_dir else sets


def short_run(ctx) -> tuple[list[str], int, int]:
    """(overrides, total steps, checkpoint interval) of the deterministic run steps 3 and 4 train.
    threads=1: CPU kernels are bit-reproducible only at a fixed thread count."""
    steps, every = (24, 4) if ctx.cpu else (400, 100)
    sets = [*base_sets(ctx), "train.deterministic=true", f"train.max_steps={steps}",
            f"train.checkpoint_steps={every}", f"train.log_every={2 if ctx.cpu else 50}"]
    if ctx.cpu:  # (CPU_SHRINK already holds threads=1)
        sets += ["data.limit=256", "train.batch_size=32", "train.epochs=3"]  # 8 steps an epoch
    else:
        sets.append("train.threads=1")
    return sets, steps, every


def train_cmd(ctx, name: str, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "ganforge", "train", "--preset", PRESET, "--out", str(ctx.work), "--name", name]
    return cmd + [a for s in sets for a in ("--set", s)]


def spawn(cmd: list[str], log: Path, *, threads: int = 0) -> subprocess.Popen:
    """Start a `ganforge` command with its output in `log`; `threads` caps OpenMP's (`ganforge eval` has no
    thread option, and torch reads OMP_NUM_THREADS when it starts)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with log.open("w") as out:  # the child holds its own copy of the file
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen, log: Path, what: str) -> None:
    """Wait for a run; a failure raises with the last lines of its output (the reason is usually there)."""
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"{what}: still running after {TIMEOUT_S} s; killed (output: {log})") from None
    if code:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"{what}: exit code {code}: {tail}")


def run(ctx, name: str, sets: list[str]) -> Path:
    log = ctx.work / f"{name}.log"
    finish(spawn(train_cmd(ctx, name, sets), log), log, f"ganforge train ({name})")
    return ctx.work / name


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run_dir)[-1])[0]


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)  # 1-D first: a 0-dim tensor has no byte view


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Bit-for-bit: the raw bytes of every tensor (torch.equal would call -0.0 and 0.0 equal, NaN unequal)."""
    keys = sorted(set(a) | set(b))
    differ = [k for k in keys if k not in a or k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
              or not torch.equal(_bytes(a[k]), _bytes(b[k]))]
    out = {"identical": not differ, "tensors": len(keys), "tensors_differing": len(differ)}
    if differ:
        out["first_differing"] = differ[0]
    return out


def _wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.is_dir():
        if proc.poll() is not None:
            raise RuntimeError(f"the run to be killed exited ({proc.returncode}) before writing {path.name}; see {log}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"no {path.name} after {TIMEOUT_S} s; see {log}")
        time.sleep(0.02)


def resume(ctx) -> dict:
    """Uninterrupted and killed runs side by side (deterministic, so sharing the machine changes no
    bit), the killed one SIGKILLed once its first checkpoint after the start exists, then resumed."""
    sets, steps, every = short_run(ctx)
    whole_log, killed_log = ctx.work / "resume-whole.log", ctx.work / "resume-killed.log"
    whole = spawn(train_cmd(ctx, "resume-whole", sets), whole_log)
    killed = spawn(train_cmd(ctx, "resume-killed", sets), killed_log)
    killed_dir = ctx.work / "resume-killed"
    try:
        _wait_for(killed_dir / "checkpoints" / f"step_{every:09d}", killed, killed_log)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        finish(whole, whole_log, "ganforge train (uninterrupted)")
    finally:
        for p in (whole, killed):
            if p.poll() is None:
                p.kill()
    at = int(list_checkpoints(killed_dir)[-1].name.split("_")[1])
    if at >= steps:
        raise RuntimeError(f"the killed run had already finished (step {at} of {steps}): nothing was resumed")
    log = ctx.work / "resume-resumed.log"
    finish(spawn([sys.executable, "-m", "ganforge", "train", "--resume", str(killed_dir)], log), log,
           "ganforge train --resume")
    return {"preset": PRESET, "overrides": sets, "steps": steps, "killed_after_checkpoint": at,
            **compare(final_weights(ctx.work / "resume-whole"), final_weights(killed_dir))}


def window_rates(run_dir: Path) -> list[float]:
    """images/s of each log window but the first (start-up, cuDNN autotuning and the first checkpoint)."""
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.strip()]
    return [r["images_per_s"] for r in lines if "images_per_s" in r][1:]


@contextlib.contextmanager
def _torch_globals():
    """A Trainer built in this process sets deterministic mode, the thread count and cuBLAS's workspace
    variable for the whole process (and the commands it starts); put them back so the FID step after
    this one runs as it would alone."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.get_num_threads())
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]
        torch.set_num_threads(saved[3])
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def first_batch(ctx, sets: list[str], placement: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    with _torch_globals():
        tr = make_trainer(PRESET, [*sets, f"data.placement={placement}"], run_dir=ctx.new_dir(f"batch-{placement}"))
        try:
            x, labels = next(tr.batches.epoch(0))
            return x.cpu(), None if labels is None else labels.cpu()
        finally:
            if tr.log is not None:
                tr.log.close()


def data_path(ctx) -> dict:
    """The short run with the data kept on the device and on the host (copied per batch): speed of each,
    and whether they train on the very same batches (deterministic=true: they must)."""
    sets, steps, _ = short_run(ctx)
    out: dict = {"preset": PRESET, "overrides": sets, "steps": steps, "placements": {}}
    for placement in ("device", "host"):  # one after the other: each rate is measured alone
        start = time.perf_counter()
        run_dir = run(ctx, f"placement-{placement}", [*sets, f"data.placement={placement}"])
        rates = window_rates(run_dir)
        out["placements"][placement] = {"images_per_s": statistics.median(rates) if rates else None,
                                        "windows": rates, "seconds": time.perf_counter() - start}
    (xd, ld), (xh, lh) = first_batch(ctx, sets, "device"), first_batch(ctx, sets, "host")
    out["first_batch"] = compare({"x": xd, **({"labels": ld} if ld is not None else {})},
                                 {"x": xh, **({"labels": lh} if lh is not None else {})})
    out["final_weights"] = compare(final_weights(ctx.work / "placement-device"),
                                   final_weights(ctx.work / "placement-host"))
    out["identical"] = out["first_batch"]["identical"] and out["final_weights"]["identical"]
    return out


def _measured_rate(ctx, amp: str) -> dict:
    """The speed step's eager case of the preset at the precision `amp=auto` picks, else measured now."""
    for case in ctx.results.get("speed", {}).get("presets", {}).get(PRESET, {}).get("cases", []):
        if case.get("amp") == amp and not case.get("compile") and case.get("images_per_s"):
            return case
    return speed_case(ctx, PRESET, amp, False, None)


def fid(ctx) -> dict:
    """Train the preset for about `fid_seconds` of wall time (steps from a measured rate, the whole
    recipe, LR decay included, squeezed into them), then evaluate it with `ganforge eval`."""
    auto = precision.choose("auto", ctx.device).name
    case = _measured_rate(ctx, "off" if auto == "fp32" else auto)
    steps = max(1, round(case["images_per_s"] * ctx.fid_seconds / case["batch_size"]))
    epochs = math.ceil(steps / case["steps_per_epoch"])
    # Samples and checkpoints only at the end: per-epoch ones would eat into a budget of seconds.
    sets = [*base_sets(ctx), f"train.max_steps={steps}", f"train.epochs={epochs}", f"train.sample_every={epochs}",
            f"train.checkpoint_every={epochs}"]
    if ctx.cpu:
        sets.append(f"data.limit={case['steps_per_epoch'] * case['batch_size']}")  # the data the rate was measured on
    run_dir = run(ctx, "fid", sets)
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.strip()]
    trained = [r for r in lines if "loss_d" in r][-1]
    metric = "cls-fid" if ctx.cpu else "fid"  # Inception runs at about 14 images/s on a CPU core
    record = ctx.work / "fid-eval.json"
    cmd = [sys.executable, "-m", "ganforge", "eval", str(run_dir), "--n", str(ctx.fid_n), "--metrics", metric,
           "--json", str(record), "--device", str(ctx.device)]
    log = ctx.work / "fid-eval.log"
    start = time.perf_counter()
    finish(spawn(cmd, log, threads=1 if ctx.cpu else 0), log, "ganforge eval")  # 1: see CPU_SHRINK
    evaluation = json.loads(record.read_text())
    result = evaluation["metrics"][metric]
    if result.get("value") is None:
        raise RuntimeError(f"{metric} was not computed: {result.get('unavailable', 'no value in the record')}")
    network = "classifier" if metric == "cls-fid" else "inception"
    return {"preset": PRESET, "overrides": sets, "precision": auto, "rate_used": case["images_per_s"],
            "planned_seconds": ctx.fid_seconds, "steps": trained["step"], "train_seconds": trained["time"],
            "kimg": trained["kimg"], "metric": metric, "value": result["value"], "n_generated": result["n_generated"],
            "n_real": result.get("n_real"), "reference_split": result.get("reference_split"),
            "eval_images_per_s": evaluation["networks"][network]["images_per_second"],
            "eval_seconds": time.perf_counter() - start,
            "note": f"a {ctx.fid_seconds:.0f}-second run's {metric} is a smoke value (does training and evaluation "
                    f"work here, and how fast), not a paper number",
            "commands": [" ".join(train_cmd(ctx, "fid", sets)[2:]), " ".join(cmd[2:])]}
