"""What each kind of CPU gets from a preset's budget: training images/s with native bf16 and without it.

    python -m benchmarks.cpu_kinds --data mnist=DIR --data cifar10=DIR ... [--presets mnist-best,...] [--steps 120]

The `*-best` presets' budgets (30 or 60 minutes) were measured on CPUs with native bf16 (AVX-512
BF16 or AMX), where `train.amp=auto` trains in bf16. A CPU with only AVX2 trains in fp32 with
256-bit vectors, so the same epochs take longer. This benchmark runs `ganforge train --max-steps N`
of each preset twice on this machine: as it is, and as an AVX2-only CPU would run it, by capping
every kernel library at AVX2 (`ATEN_CPU_CAPABILITY=avx2` for PyTorch's own kernels,
`ONEDNN_MAX_CPU_ISA=AVX2` for oneDNN's convolutions, `MKL_ENABLE_INSTRUCTIONS=AVX2` for MKL's
matrix products) and `train.amp=off` (what `auto` picks without native bf16). That is an emulation:
a real AVX2 CPU also differs in clock, cache and cores, so the record names this machine's CPU.

Each figure is the median images/s of the logged windows after the first (the first holds the
start-up). The record (`records/quality/cpu-kinds.json`) holds, per preset, both speeds and the
minutes its epochs take at each, which the README and the presets' descriptions quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.quality import RECORDS, cpu_model

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PRESETS = ("mnist-best", "mnist-cgan-best", "fashion-mnist-best", "cifar10-best", "cifar10-cgan-best", "celeba-best",
           "mnist-dp")


def probe(preset: str, data_dir: str, *, steps: int, avx2: bool, out: Path, sets: list[str]) -> dict:
    """One short training: its median images/s after the first logged window, and the command."""
    name = f"{preset}-{'avx2' if avx2 else 'native'}"
    log_every = max(steps // 6, 1)
    cmd = [sys.executable, "-m", "ganforge", "train", "--preset", preset, "--data-dir", data_dir, "--out", str(out),
           "--name", name, "--max-steps", str(steps), "--set", f"train.log_every={log_every}",
           *(f for kv in sets for f in ("--set", kv)), *(["--set", "train.amp=off"] if avx2 else [])]
    env = {**os.environ, **(AVX2 if avx2 else {})}
    print("$", " ".join(f"{k}={v}" for k, v in AVX2.items()) if avx2 else "", shlex.join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    if not speeds:
        sys.exit(f"benchmarks.cpu_kinds: {preset} logged fewer than 2 windows in {steps} steps; raise --steps")
    from ganforge.config import load_yaml

    ips = statistics.median(speeds)
    epochs = load_yaml(out / name / "config.yaml").train.epochs  # the preset's, or as --set
    return {"images_per_s": round(ips, 1), "windows": len(speeds),
            "budget_minutes": round(budget_minutes(rows, epochs, ips), 1),
            "env": AVX2 if avx2 else {}, "command": shlex.join(["ganforge", *cmd[3:]])}


def budget_minutes(rows: list[dict], epochs: int, images_per_s: float) -> float:
    """Minutes `epochs` passes over the run's data set (its metrics.jsonl `rows`) take at `images_per_s`."""
    last = [r for r in rows if "kimg" in r and r.get("epoch")][-1]
    n = last["kimg"] * 1000 / last["epoch"]  # images per epoch, as the run counted them
    return epochs * n / images_per_s / 60


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cpu_kinds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", default=[], metavar="DATASET=DIR",
                    help="a data set's folder (mnist, fashion-mnist, cifar10, celeba); repeatable")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: those whose data is given)")
    ap.add_argument("--steps", type=int, default=120, help="training steps per probe")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for every probe")
    ap.add_argument("--record", default=str(RECORDS / "cpu-kinds.json"))
    args = ap.parse_args(argv)
    from ganforge.config import preset_config
    from ganforge.errors import ConfigError

    bad = [d for d in args.data if "=" not in d or not d.split("=", 1)[1]]
    if bad:
        sys.exit(f"benchmarks.cpu_kinds: --data {bad[0]!r}: expected DATASET=DIR, "
                 "e.g. --data mnist=../shared/data/mnist")
    dirs = dict(d.split("=", 1) for d in args.data)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cpu-kinds-") as tmp:
        for preset in args.presets.split(","):
            try:
                dataset = preset_config(preset).data.name
            except ConfigError as exc:
                sys.exit(f"benchmarks.cpu_kinds: --presets: {exc}")
            if dataset not in dirs:
                print(f"{preset}: skipped (no --data {dataset}=DIR)")
                continue
            results[preset] = {kind: probe(preset, dirs[dataset], steps=args.steps, avx2=kind == "avx2_fp32",
                                           out=Path(tmp), sets=args.set) for kind in ("native", "avx2_fp32")}
            n, a = results[preset]["native"], results[preset]["avx2_fp32"]
            print(f"{preset}: native {n['images_per_s']:.0f} img/s ({n['budget_minutes']:.0f} min), "
                  f"AVX2 fp32 {a['images_per_s']:.0f} img/s ({a['budget_minutes']:.0f} min)", flush=True)
    import torch

    record = {"machine": {"cpu": cpu_model(), "load_average_after": round(os.getloadavg()[0], 2)},
              "emulation": AVX2 | {"train.amp": "off"}, "steps": args.steps, "overrides": args.set, "presets": results,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
