"""The `ganforge` command: the subcommand table. Each command lives in its own module of this package
(train, eval, presets, datasets, audit, ...) that parses, calls the library and prints.

Every user-fixable problem surfaces as a `GanforgeError` and is printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Optional

from ganforge import __version__
from ganforge.cli import audit as audit_command
from ganforge.cli import compare, export, interpolate, report, sample, serve, sweep
from ganforge.cli import datasets as datasets_command
from ganforge.cli import eval as eval_command
from ganforge.cli import presets as presets_command
from ganforge.cli import train as train_command
from ganforge.errors import GanforgeError


class Parser(argparse.ArgumentParser):
    """argparse, its refusals (a non-integer count, an unknown option) in the one line every other
    refusal takes, rather than the usage block followed by the error."""

    def error(self, message: str):
        self.exit(2, f"ganforge: error: {message} (`{self.prog} --help` lists the options)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ganforge", description="Train and evaluate GANs, and use what you trained.")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_command.add_parser(sub)
    presets_command.add_parser(sub)
    datasets_command.add_parser(sub)
    eval_command.add_parser(sub)
    audit_command.add_parser(sub)
    sweep.add_parser(sub)
    for command in (sample, interpolate, compare, report, serve, export):
        command.add_parser(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that every atomic write removes its temporary files."""


def _terminate(signum, frame):
    raise Terminated()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"ganforge: warning: {message}\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    import warnings

    # One line, not Python's two with the source of the call; only the text: whoever records
    # warnings (a test, a caller's catch_warnings) still gets them.
    warnings.formatwarning = _one_line_warning
    parser = make_parser()
    args = parser.parse_args(argv)
    previous = None
    # Training stops gracefully on SIGTERM with a checkpoint of its own; the other commands clean up here.
    if args.command != "train" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.func(args)
    except GanforgeError as exc:
        print(f"ganforge: error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:  # a full disk, a file vanished: what failed, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ganforge: error: {where}{exc.strerror or exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        code = 130
    except Terminated:
        print("ganforge: terminated; nothing half-written was kept", file=sys.stderr)
        code = 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)
