"""The `ganforge` command: the subcommand table. Each command lives in its own module of this package
(train, eval, audit, ...) that parses, calls the library and prints; presets and datasets are short enough to live here.

Every user-fixable problem surfaces as a `GanforgeError` and is printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ganforge import __version__
from ganforge.cli import audit as audit_command, eval as eval_command, train as train_command
from ganforge.cli import compare, export, interpolate, report, sample, serve
from ganforge.errors import GanforgeError


def cmd_presets(args: argparse.Namespace) -> int:
    import ganforge.presets  # noqa: F401
    from ganforge.config import PRESETS

    width = max(len(n) for n in PRESETS.names())
    for name, preset in PRESETS.items():
        print(f"{name:<{width}}  {preset.build().description}  [{preset.source}]")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ganforge.data import dataset_table

    print(dataset_table(args.data_dir))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="Train and evaluate GANs, and use what you trained.")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_command.add_parser(sub)
    sub.add_parser("presets", help="list the named configurations").set_defaults(func=cmd_presets)
    p = sub.add_parser("datasets", help="list datasets, where each looks for files, and which are present")
    p.add_argument("--data-dir", help="also look in this folder")
    p.set_defaults(func=cmd_datasets)
    eval_command.add_parser(sub)
    audit_command.add_parser(sub)
    for command in (sample, interpolate, compare, report, serve, export):
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except GanforgeError as exc:
        print(f"ganforge: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
