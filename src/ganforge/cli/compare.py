"""`ganforge compare RUN_DIR RUN_DIR... [--out DIR]`: a table of runs (Markdown here, CSV beside it) and
their final grids side by side."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ganforge.errors import UsageError

NAMES = ("compare.md", "compare.csv", "compare.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare runs: a table of losses and metrics, final grids side by side",
                       description="Compare runs: preset, epochs, images seen, time, last-epoch losses and the "
                                   "metrics of each eval.json (flagged when computed differently), plus one PNG "
                                   "of the final grids.")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run folders written by `ganforge train`")
    p.add_argument("--out", default="compare", help="folder for compare.md, compare.csv, compare.png "
                                                   "(default: ./compare)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier compare.* files in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.outputs.compare import markdown, table, write
    from ganforge.outputs.files import check_output_folder
    from ganforge.outputs.runs import read_run

    runs = [read_run(d) for d in args.run_dirs]
    out = check_output_folder(Path(args.out), NAMES, overwrite=args.overwrite)
    print(markdown(*table(runs)))
    created = not out.exists()
    try:
        out.mkdir(exist_ok=True)
        written = write(runs, out)
    except OSError as exc:
        if created:  # nothing but this command's own files are in it: leave no empty or partial result
            shutil.rmtree(out, ignore_errors=True)
        raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc}); "
                         f"{'nothing was written' if created else 'the files written before are complete'}") from None
    print("wrote", ", ".join(str(p) for p in written.values()))
    return 0
