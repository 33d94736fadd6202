"""The `ganforge` command: the subcommand table. Each command lives in its own module of this package
(train, eval, presets, datasets, audit, ...) that parses, calls the library and prints.

Every user-fixable problem surfaces as a `GanforgeError` and is printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ganforge import __version__
from ganforge.cli import audit as audit_command, datasets as datasets_command, eval as eval_command
from ganforge.cli import presets as presets_command, train as train_command
from ganforge.cli import compare, export, interpolate, report, sample, serve
from ganforge.errors import GanforgeError


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="Train and evaluate GANs, and use what you trained.")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_command.add_parser(sub)
    presets_command.add_parser(sub)
    datasets_command.add_parser(sub)
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
