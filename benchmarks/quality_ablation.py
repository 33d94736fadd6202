"""The MNIST ablation: the founding documents' presets, then the issue-11 techniques added one at a time.

    python -m benchmarks.quality_ablation --data-dir DIR [--epochs 3] [--only ROW ...] [--metrics M]

Every row trains for the same number of images (--epochs passes over the 60,000 digits) and is
evaluated by benchmarks/quality.py with 10,000 generated digits against the 10,000 test digits. The
default metrics are the digit classifier's FID and IS, which take seconds; Inception FID takes
about ten minutes per row on a 2-core CPU (`--metrics fid,cls-fid,cls-is`). Records go to
benchmarks/records/quality/ablation/<row>.json and the table is printed in markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.quality import RECORDS
from benchmarks.quality import main as quality

# (row, preset, overrides): each technique row is the row above it plus one change.
_FAST = ["optim.lr_g=1.2e-3", "optim.lr_d=1.2e-3", "train.batch_size=32"]
_EMA = [*_FAST, "model.ema_kimg=5"]
ROWS = [
    ("seed-002-mnist-gan", "mnist-gan", []),
    ("seed-003-mnist-mlp", "mnist-mlp", []),
    ("seed-003-mnist-mlp-bn", "mnist-mlp-bn", []),
    ("seed-000-mnist-upsample", "mnist-upsample", []),
    ("seed-004-mnist-dcgan", "mnist-dcgan", []),
    ("seed-001-mnist-cgan", "mnist-cgan", []),
    ("dcgan+batch32-lr1.2e-3", "mnist-dcgan", _FAST),
    ("dcgan+batch32-lr1.2e-3+ema5k", "mnist-dcgan", _EMA),
    ("dcgan+batch32-lr1.2e-3+ema5k+lr-decay", "mnist-dcgan", [*_EMA, "optim.lr_decay_start=0.5"]),
    ("mnist-best", "mnist-best", []),
    ("mnist-cgan-best", "mnist-cgan-best", []),
]
OUT = RECORDS / "ablation"


def table(rows: list[str], out: Path = OUT) -> str:
    """The recorded rows as a markdown table (a missing record is left out)."""
    lines = ["| row | kimg | train s | " + " | ".join(["cls-FID", "cls-IS", "Inception FID"]) + " |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        path = out / f"{row}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        m = r["metrics"]
        cells = [f"{m[k]:.2f}" if k in m else "–" for k in ("cls-fid", "cls-is", "fid")]
        lines.append(f"| {row} | {r['kimg']:.0f} | {r['train_seconds']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality_ablation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="the MNIST folder")
    ap.add_argument("--epochs", type=int, default=3, help="the same budget for every row (default 3: 180 kimg)")
    ap.add_argument("--only", nargs="*", help="rows to run (default: all)")
    ap.add_argument("--metrics", default="cls-fid,cls-is", help="metric keys (default cls-fid,cls-is)")
    ap.add_argument("--out", default="runs/ablation", help="parent folder of the runs")
    ap.add_argument("--table", action="store_true", help="print the table of the recorded rows and stop")
    args = ap.parse_args(argv)
    names = [r[0] for r in ROWS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(names)}")
    if not args.table:
        for row, preset, sets in ROWS:
            if args.only and row not in args.only:
                continue
            quality(["--preset", preset, "--name", row, "--epochs", str(args.epochs), "--data-dir", args.data_dir,
                     "--out", args.out, "--metrics", args.metrics, "--record", str(OUT / f"{row}.json"),
                     *[a for s in sets for a in ("--set", s)]])
    print(table([r for r in names if not args.only or r in args.only]))


if __name__ == "__main__":
    main()
