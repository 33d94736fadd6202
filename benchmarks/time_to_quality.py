"""Quality per second: how much sooner ganforge reaches the image quality the textbook loop ends with.

    python -m benchmarks.time_to_quality [--preset mnist-best] [--seconds 1800] [--snapshots 12]
                                         [--n 10000] [--data-dir DIR] [--out DIR] [--record FILE]

Both trainings run here, one after the other, on the same machine and data set:
- ganforge: `ganforge train --preset P` for its whole budget, a checkpoint every 1/`snapshots` of it;
- the textbook loop (benchmarks/textbook.py: pytorch/examples' DCGAN recipe, 64 channels, batch
  norm, batch 64, BCE, Adam 2e-4, a torchvision DataLoader) for `--seconds` of training, with a copy of
  G taken every 1/`snapshots` of that time.
Every snapshot is then scored with the same metric (the digit classifier's FID for MNIST and
Fashion-MNIST, whose Inception FID costs 14 images/s on a CPU; `--metric fid` for Inception) on N
generated images against the test split, after the training, so evaluation never counts against
either clock. The training seconds of a ganforge snapshot are those its metrics.jsonl logged at
that step (they include checkpoint writing; the textbook's snapshots cost nothing).

The figure: the textbook's final score F, and the first ganforge snapshot scoring F or better; the
ratio of the textbook's seconds to that snapshot's seconds says how many times sooner.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

RECORDS = Path(__file__).resolve().parent / "records" / "quality"


def times_sooner(baseline: list[tuple[float, float]], ours: list[tuple[float, float]]) -> Optional[dict]:
    """(seconds, score) curves, lower scores better: the baseline's final score and how many times
    sooner `ours` first reached it (None when it never did)."""
    t_base, target = baseline[-1]
    reached = next(((t, s) for t, s in sorted(ours) if s <= target), None)
    if reached is None:
        return None
    return {"target": target, "baseline_seconds": t_base, "ours_seconds": reached[0], "ours_score": reached[1],
            "times_sooner": t_base / max(reached[0], 1e-9)}


def _score(G, *, z_dim: int, num_classes: int, real, metric: str, n: int, dataset: str, split: str) -> float:
    from ganforge.metrics.evaluation import evaluate, make_generate

    rec = evaluate(generate=make_generate(G.eval(), z_dim=z_dim, num_classes=num_classes), real_images=real,
                   metrics=[metric], n=n, dataset_key=f"{dataset}-{split}-time-to-quality", split=split,
                   classifier=dataset, seed=0)
    return float(rec["metrics"][metric]["value"])


def _textbook(data, *, seconds: float, snapshots: int, batch_size: int, workers: int) -> list[tuple[float, object]]:
    """Train the textbook loop for `seconds`; (training seconds, a copy of G) every 1/snapshots of it."""
    from benchmarks.textbook import TextbookLoop, textbook_loader
    from ganforge.config import ModelConfig
    from ganforge.models import build_models

    G, D = build_models(ModelConfig(arch="dcgan", g_channels=64, d_channels=64, d_norm="batch"),
                        channels=data.images.shape[1], size=data.size, num_classes=0)
    loop = TextbookLoop(G, D, textbook_loader(data.images, size=data.size, batch_size=batch_size,
                                              workers=workers), z_dim=100)
    out, trained, due = [], 0.0, seconds / snapshots
    while trained < seconds:
        start = time.perf_counter()
        loop.step()
        trained += time.perf_counter() - start  # the snapshot copies below are not training
        if trained >= due:
            out.append((trained, copy.deepcopy(G)))
            due += seconds / snapshots
    return out


def _ganforge(args, run_dir: Path) -> list[tuple[float, Path]]:
    """Train the preset with a checkpoint every 1/snapshots of its steps; (training seconds, checkpoint)."""
    from ganforge.config import apply_override, preset_config
    from ganforge.data import load_dataset

    cfg = preset_config(args.preset)
    for assignment in args.set:  # the run's own epochs and data, so the snapshots span its steps
        apply_override(cfg, assignment)
    n_images = len(load_dataset(name=cfg.data.name, root=args.data_dir, limit=cfg.data.limit).images)
    total = cfg.train.epochs * (n_images // cfg.train.batch_size)
    cmd = [sys.executable, "-m", "ganforge", "train", "--preset", args.preset, "--out", str(run_dir.parent),
           "--name", run_dir.name, "--set", f"train.checkpoint_steps={max(total // args.snapshots, 1)}",
           # every snapshot kept: the run also checkpoints at each epoch's end, and a rotation that
           # dropped the earliest snapshots would hide how soon the textbook's score was reached
           "--set", f"train.keep_checkpoints={args.snapshots + cfg.train.epochs + 2}",
           *sum((["--set", s] for s in args.set), [])]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    print("$", shlex.join(cmd), flush=True)
    if subprocess.call(cmd):
        sys.exit("benchmarks.time_to_quality: the ganforge training failed")
    seconds = {r["step"]: r["time"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if "time" in r}
    from ganforge.training.checkpoint import list_checkpoints

    return [(seconds[int(p.name.split("_")[1])], p) for p in list_checkpoints(run_dir)
            if int(p.name.split("_")[1]) in seconds]


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality",
                                 description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-best")
    ap.add_argument("--seconds", type=float, default=1800.0, help="the textbook loop's training budget")
    ap.add_argument("--snapshots", type=int, default=12, help="scored points on each curve")
    ap.add_argument("--metric", default="cls-fid")
    ap.add_argument("--n", type=int, default=10_000, help="generated images per score")
    ap.add_argument("--split", default="test", help="the real images scored against (mnist-5k has train only)")
    ap.add_argument("--batch-size", type=int, default=64, help="the textbook loop's (pytorch/examples: 64)")
    ap.add_argument("--workers", type=int, default=2, help="the textbook DataLoader's workers (pytorch/examples: 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for ganforge's run")
    ap.add_argument("--data-dir")
    ap.add_argument("--out", default="runs/time-to-quality")
    ap.add_argument("--record", help="default benchmarks/records/quality/time-to-quality-<preset>.json")
    args = ap.parse_args(argv)

    import torch

    from benchmarks.quality import cpu_model
    from ganforge import __version__
    from ganforge.config import load_yaml, preset_config
    from ganforge.data import load_dataset
    from ganforge.training.checkpoint import load_generator

    run_dir = Path(args.out) / args.preset
    if run_dir.exists():
        sys.exit(f"benchmarks.time_to_quality: {run_dir} exists; pass another --out")
    cfg = preset_config(args.preset)
    train = load_dataset(name=cfg.data.name, root=args.data_dir, limit=cfg.data.limit)
    reference = load_dataset(name=cfg.data.name, root=args.data_dir, split=args.split).images
    ours_ckpts = _ganforge(args, run_dir)
    base_gs = _textbook(train, seconds=args.seconds, snapshots=args.snapshots, batch_size=args.batch_size,
                        workers=args.workers)

    def score(g, num_classes: int = 0) -> float:
        return _score(g, z_dim=100, num_classes=num_classes, real=reference, metric=args.metric, n=args.n,
                      dataset=cfg.data.name, split=args.split)

    classes = train.num_classes if load_yaml(run_dir / "config.yaml").model.conditional else 0
    ours = [(t, score(load_generator(run_dir, checkpoint=p)[1], classes)) for t, p in ours_ckpts]
    base = [(t, score(g)) for t, g in base_gs]
    record = {
        "preset": args.preset, "metric": args.metric,
        "protocol": {"n_generated": args.n, "reference_split": args.split, "network": args.metric},
        "ganforge": [{"seconds": round(t, 1), "score": s} for t, s in ours],
        "textbook": [{"seconds": round(t, 1), "score": s} for t, s in base],
        "result": times_sooner(base, ours),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()},
        "versions": {"ganforge": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "command": shlex.join(["python", "-m", "benchmarks.time_to_quality", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.record) if args.record else RECORDS / f"time-to-quality-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    r = record["result"]
    print(f"textbook final {args.metric} {base[-1][1]:.2f} after {base[-1][0]:.0f} s; " +
          (f"ganforge reached it after {r['ours_seconds']:.0f} s: {r['times_sooner']:.1f} times sooner"
           if r else "ganforge never reached it") + f"; wrote {out}")


if __name__ == "__main__":
    main()
