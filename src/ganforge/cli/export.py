"""`ganforge export RUN_DIR --format onnx|torchscript --out FILE`: the generator alone, verified after export."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ganforge.cli.sample import add_model_arguments, load


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the generator as ONNX or TorchScript",
                       description="Export the generator (inputs z and, for a conditional model, labels; dynamic "
                                   "batch) and check the file against PyTorch on fixed inputs.")
    add_model_arguments(p)
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True, help="onnx or torchscript")
    p.add_argument("--out", required=True, help="the file to write (.onnx or .pt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.outputs.export import export

    model = load(args)
    start = time.perf_counter()
    info = export(model, fmt=args.format, out=Path(args.out), overwrite=args.overwrite)
    inputs = " and ".join(f"{n} [batch{', ' + str(model.z_dim) if n == 'z' else ''}]" for n in info["inputs"])
    print(f"wrote {args.out} ({args.format}; inputs {inputs}; output images [batch, {model.channels}, "
          f"{model.size}, {model.size}] in [-1, 1]) in {time.perf_counter() - start:.1f} s; matches PyTorch "
          f"within {info['max_abs_diff']:.1e} on a batch of {info['check_batch']}")
    return 0
