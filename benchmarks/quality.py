"""Image quality in a fixed budget: train a preset, evaluate it with the published protocol, keep a record.

    python -m benchmarks.quality --preset mnist-best [--epochs E] [--set KEY=VALUE ...]
                                 [--data-dir DIR] [--out DIR] [--record FILE] [--n N] [--skip-train]
                                 [--audit "AUDIT ARGS"]

The budget is the preset's length in images (its epochs, or --epochs), so a record means the same
on any machine; the record also says how many seconds of training that took here, on which CPU,
and whether anything else was running (the load average before and after). Both steps run the
`ganforge` command, so the record holds the exact commands that reproduce it. With --audit, a third
command, `ganforge audit`, adds the utility (CAS, the DP papers' downstream CNN) and the membership
attacks; a private run's record also carries its privacy ledger (epsilon spent, delta, accountant).

Protocols (docs/evaluation.md describes each metric):
- mnist, fashion-mnist: Inception FID/KID/PR of 10,000 generated against the 10,000 test images,
  TF1 bilinear resize to 299 (Lucic et al. 2018), plus the digit/clothes classifier's FID, IS and,
  for conditional models, class accuracy;
- mnist-5k (the demo): classifier FID and IS of 5,000 generated against the 5,000 training digits;
- cifar10: 10,000 generated against the whole training set (50,000; here the JPEG copy, so not
  exactly the published reference), FID/KID/PR/IS;
- celeba, folder: 10,000 against the training folder (6,000 faces here: not comparable with papers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

PROTOCOLS = {
    # dataset: (reference split, generated N, metrics, note)
    "mnist": ("test", 10_000, "fid,kid,pr,cls-fid,cls-is", "Lucic et al. 2018: 10k generated vs 10k test"),
    "fashion-mnist": ("test", 10_000, "fid,kid,pr,cls-fid,cls-is", "Lucic et al. 2018: 10k generated vs 10k test"),
    "mnist-5k": ("train", 5_000, "cls-fid,cls-is", "classifier features, 5k generated vs the 5k training digits"),
    "cifar10": ("train", 10_000, "fid,kid,pr,is", "10k generated vs the 50k training images (JPEG copy here)"),
    "celeba": ("train", 10_000, "fid,kid,pr", "vs the local CelebA folder: not comparable with published figures"),
    "folder": ("train", 10_000, "fid,kid,pr", "vs the training folder"),
}
CONDITIONAL_METRICS = ",cls-acc"
RECORDS = Path(__file__).resolve().parent / "records" / "quality"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    bf16 = "native bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "no native bf16"
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} cores, {bf16}"


def matmul_gflops(threads: int) -> float:
    """fp32 matmul GFLOP/s on `threads` threads. Two hosts that `lscpu` names alike ran the same private
    training 2.2 times apart on two days (1,117 and 500 images/s), so a record's seconds are read
    beside what the host gave at the time."""
    import torch

    from benchmarks.train_speed import matmul_peak

    before = torch.get_num_threads()
    torch.set_num_threads(max(threads, 1))
    try:
        return round(matmul_peak(torch.float32, torch.device("cpu")) / 1e9, 1)
    finally:
        torch.set_num_threads(before)


def _training_threads(preset: str, overrides: list[str]) -> int:
    """The threads the training will use: its config's `train.threads`, else what ganforge picks."""
    from ganforge.config import apply_override, preset_config
    from ganforge.errors import ConfigError
    from ganforge.runtime import cpu_threads

    try:
        cfg = preset_config(preset)
        for s in overrides:
            apply_override(cfg, s)
    except ConfigError as e:
        sys.exit(f"benchmarks.quality: {e}")
    return cpu_threads(cfg.train.threads)


def _run(cmd: list[str]) -> float:
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.call(cmd)
    if code:
        sys.exit(f"benchmarks.quality: command failed with exit code {code}: {shlex.join(cmd)}")
    return time.perf_counter() - start


def _audit_summary(run_dir: Path) -> dict:
    """The audit's utility (CAS, the downstream CNN) and membership-inference results, without per-image lists."""
    audit = json.loads((run_dir / "audit.json").read_text())
    return {k: audit[k] for k in ("protocol", "utility", "membership", "memorisation") if k in audit}


def _reuse_evaluation(eval_json: Path, *, split: str, n: int, metrics: str, skip_train: bool) -> float:
    """The seconds of the run's latest evaluation, after checking that it followed the protocol."""
    if not skip_train:
        sys.exit("benchmarks.quality: --skip-eval needs --skip-train (a new training has no evaluation yet)")
    try:
        done = json.loads(eval_json.read_text())
    except (OSError, ValueError):
        sys.exit(f"benchmarks.quality: --skip-eval: no readable {eval_json}; run without --skip-eval")
    asked = (split, n, sorted(metrics.split(",")))
    found = (done.get("reference_split"), done.get("n_generated"), sorted(done.get("metrics", {})))
    if asked != found:
        sys.exit(f"benchmarks.quality: --skip-eval: {eval_json} holds split {found[0]}, n {found[1]}, metrics "
                 f"{','.join(found[2])}; the protocol asks for split {split}, n {n}, metrics {metrics}")
    return float(done.get("seconds", 0.0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--epochs", type=int, help="budget in epochs (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides (repeatable)")
    ap.add_argument("--data-dir", help="the data set's folder (for presets that read one)")
    ap.add_argument("--out", default="runs/quality", help="parent folder of the run (default runs/quality)")
    ap.add_argument("--name", help="run folder name (default: the preset)")
    ap.add_argument("--n", type=int, help="generated images for evaluation (default: the protocol's)")
    ap.add_argument("--metrics", help="metric keys (default: the protocol's)")
    ap.add_argument("--n-real", type=int, help="real reference images, a fixed random subset of the split (default: "
                                               "the whole split, as the protocol); the record's note says so")
    ap.add_argument("--record", help="record file (default benchmarks/records/quality/<name>.json)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing run folder")
    ap.add_argument("--skip-eval", action="store_true",
                    help="with --skip-train: record the run's latest evaluation (eval.json) if it kept the protocol")
    ap.add_argument("--train-note", default="", help="how the training ran (what else ran, what it was launched as)")
    ap.add_argument("--audit", default="", metavar="ARGS",
                    help="also run `ganforge audit RUN ARGS` (e.g. \"--n 10000 --spaces pixels\") and record its "
                         "utility and membership-inference results")
    args = ap.parse_args(argv)

    from ganforge.config import load_yaml, preset_config

    name = args.name or args.preset
    run_dir = Path(args.out) / name
    exe = [sys.executable, "-m", "ganforge"]
    train_cmd = [*exe, "train", "--preset", args.preset, "--out", args.out, "--name", name]
    if args.epochs:
        train_cmd += ["--epochs", str(args.epochs)]
    if args.data_dir:
        train_cmd += ["--data-dir", args.data_dir]
    for s in args.set:
        train_cmd += ["--set", s]
    load_before = os.getloadavg()[0]
    threads = gflops_before = None  # an existing run's training threads and host are not known here
    if not args.skip_train:
        threads = _training_threads(args.preset, args.set)
        gflops_before = matmul_gflops(threads)
        if run_dir.exists():
            sys.exit(f"benchmarks.quality: {run_dir} exists; pass --name, or --skip-train to evaluate it")
        _run(train_cmd)
    load_after = os.getloadavg()[0]
    gflops_after = None if threads is None else matmul_gflops(threads)
    cfg = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else preset_config(args.preset)
    split, n, metrics, note = PROTOCOLS.get(cfg.data.name, PROTOCOLS["folder"])
    metrics = args.metrics or metrics + (CONDITIONAL_METRICS if cfg.model.conditional else "")
    if args.n and args.n != n:  # the protocol's note names its N; say what this record did instead
        note = f"{args.n:,} generated vs the {split} split, not the protocol's {n:,} ({note})"
    n = args.n or n
    if args.n_real:
        note = (f"{n:,} generated vs {args.n_real:,} images of the {split} split (a fixed random subset), not the "
                f"protocol's whole split ({note})")
    # `ganforge eval` files its record under the run's eval/ (never replaced) and copies the latest to
    # eval.json, which is read back here.
    eval_json = run_dir / "eval.json"
    eval_cmd = [*exe, "eval", str(run_dir), "--split", split, "--n", str(n), "--metrics", metrics]
    if args.n_real:
        eval_cmd += ["--n-real", str(args.n_real)]
    if args.data_dir:
        eval_cmd += ["--data-dir", args.data_dir]
    if args.skip_eval:
        eval_seconds = _reuse_evaluation(eval_json, split=split, n=n, metrics=metrics, skip_train=args.skip_train)
    else:
        eval_seconds = _run(eval_cmd)

    audit_cmd = [*exe, "audit", str(run_dir), *shlex.split(args.audit), "--overwrite"]
    if args.audit and args.data_dir:
        audit_cmd += ["--data-dir", args.data_dir]
    audit_seconds = _run(audit_cmd) if args.audit else None

    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in log if "kimg" in r and "time" in r][-1]  # a private run logs no real-batch losses
    evaluation = json.loads(eval_json.read_text())
    import torch

    from ganforge import __version__
    from ganforge.training import ledger

    private = ledger.summary(run_dir)  # None for a run without DP
    record = {
        "preset": cfg.preset, "dataset": cfg.data.name, "conditional": cfg.model.conditional,
        "protocol": {"reference_split": split, "n_generated": n, "n_real": args.n_real, "note": note},
        "metrics": {k: v.get("value") for k, v in evaluation["metrics"].items()},
        "evaluation": evaluation,
        "kimg": last["kimg"], "steps": last["step"], "epochs": cfg.train.epochs,
        "train_seconds": last["time"], "eval_seconds": round(eval_seconds, 1),
        # The load averages say whether anything else ran during this training; unknown for --skip-train.
        "machine": {"cpu": cpu_model(),
                    "threads": cfg.train.threads or threads,
                    "load_average_before": None if args.skip_train else round(load_before, 2),
                    "load_average_after": None if args.skip_train else round(load_after, 2),
                    # what the host gave the training's threads just before and after it
                    "matmul_gflops_before": gflops_before, "matmul_gflops_after": gflops_after,
                    "train_note": args.train_note},
        **({"privacy": private} if private else {}),
        **({"audit": _audit_summary(run_dir), "audit_seconds": round(audit_seconds or 0.0, 1)} if args.audit else {}),
        "versions": {"ganforge": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "commands": [shlex.join(["ganforge", *cmd[3:]]) for cmd in (train_cmd, eval_cmd, *([audit_cmd] if args.audit
                                                                                           else []))],
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.record) if args.record else RECORDS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    summary = ", ".join(f"{k} {v:.3f}" for k, v in record["metrics"].items() if isinstance(v, (int, float)))
    print(f"{cfg.preset}: {summary}; {record['kimg']:.0f} kimg in {record['train_seconds']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
