"""`ganforge sample RUN_DIR --n N --out PATH`: N images of a trained generator, as PNGs or one .npz."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """RUN_DIR, --checkpoint and --device: how every command that uses a trained generator finds it."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ganforge train`")
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or mps")


def pick_device_for(name: str):
    """runtime.pick_device, its refusal naming this command's --device rather than train.device."""
    from ganforge.errors import ConfigError
    from ganforge.runtime import pick_device

    try:
        return pick_device(name)
    except ConfigError as exc:
        raise ConfigError(f"--device {name}: {str(exc).split(': ', 1)[-1]}") from None


def load(args: argparse.Namespace):
    from ganforge.outputs.model import load_model

    return load_model(args.run_dir, checkpoint=args.checkpoint, device=pick_device_for(args.device))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write N generated images (PNG folder or .npz)",
                       description="Write N images from a run's generator (the EMA one when the run kept one): a "
                                   "folder of PNGs (one subfolder per class and labels.csv for a conditional "
                                   "model) or one .npz. The same seed gives the same files.")
    add_model_arguments(p)
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="a new folder (png) or file (npz)")
    p.add_argument("--class", dest="label", type=int, help="only this class (conditional models)")
    p.add_argument("--seed", type=int, default=0,
                   help="latent seed (default 0): image i depends only on the seed and i")
    p.add_argument("--format", choices=["png", "npz"], help="default: npz when --out ends in .npz, else png")
    p.add_argument("--truncation", type=float, help="redraw latent entries beyond ±T (e.g. 0.7: cleaner, less varied)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.outputs.sampling import sample

    fmt = args.format or ("npz" if args.out.endswith(".npz") else "png")
    model = load(args)
    start = time.perf_counter()
    out = sample(model, n=args.n, out=Path(args.out), seed=args.seed, k=args.label, fmt=fmt,
                 truncation=args.truncation, overwrite=args.overwrite)
    what = f"class {model.class_name(args.label)}" if args.label is not None else (
        f"{model.num_classes} classes in turn" if model.conditional else "unconditional")
    print(f"wrote {args.n} images ({what}, seed {args.seed}) from {model.checkpoint} to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
