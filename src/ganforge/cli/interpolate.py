"""`ganforge interpolate RUN_DIR --out FILE`: rows of spherical walks between random latents (PNG or GIF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganforge.cli.sample import add_model_arguments, load


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interpolate", help="grid or GIF of smooth walks through the latent space",
                       description="Rows of smooth walks between random latent points (spherical interpolation); "
                                   "for a conditional model every class walks the same path, one row each.")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="a .png file (a .gif with --gif)")
    p.add_argument("--steps", type=int, default=10, help="images per walk (default 10)")
    p.add_argument("--rows", type=int, help="walks (default 8; 1 for a conditional model, shown for every class)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0): the same seed gives the same walks")
    p.add_argument("--gif", action="store_true", help="an animation along the walks instead of a grid")
    p.add_argument("--truncation", type=float, help="redraw latent entries beyond ±T")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.outputs.interpolate import interpolate

    model = load(args)
    out = interpolate(model, out=Path(args.out), steps=args.steps, rows=args.rows, seed=args.seed, gif=args.gif,
                      truncation=args.truncation, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
