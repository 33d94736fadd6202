"""`ganforge report RUN_DIR`: one self-contained HTML page (RUN_DIR/report.html) on how the run went."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page on how a run went",
                       description="Write RUN_DIR/report.html: config, loss curves, metric history, final grid, "
                                   "progress animation, class grid and evaluation table, images embedded.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ganforge train`")
    p.add_argument("--out", help="where to write the page (default RUN_DIR/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.outputs.files import atomic_output, check_output
    from ganforge.outputs.report import render
    from ganforge.outputs.runs import read_run

    info = read_run(args.run_dir)
    out = Path(args.out) if args.out else info.dir / "report.html"
    own = args.out is None  # our own report.html is regenerated; another file is not
    check_output(out, overwrite=own, own_file=own)
    with atomic_output(out, overwrite=own, own_file=own) as tmp:
        tmp.write_text(render(info))
    print(f"wrote {out}")
    return 0
