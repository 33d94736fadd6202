"""`ganforge sweep`: hyperparameter search over `ganforge train` runs with Optuna (Akiba et al. 2019).

Parses, builds the base config as `ganforge train` does (preset or config file, then --data-dir and
--set), and calls `ganforge.sweep.start`; a search-space file with problems is refused with one line
per problem before any trial starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="hyperparameter search: many short trainings chosen by Optuna, poor ones pruned",
                       description="Search hyperparameters with Optuna: each trial is a `ganforge train` run scored "
                                   "by its periodic evaluation; poor trials are stopped early (median rule).",
                       epilog="Run the same command again (same --out, or the same --study and --storage on "
                              "another machine) to continue a study: --trials is the study's total. Exit codes: "
                              "0 done, 2 a problem with the input, 130/143 stopped by SIGINT/SIGTERM (every "
                              "running trial checkpointed; those trials are asked again when the study continues).")
    p.add_argument("--preset", metavar="NAME", help="the base config of every trial (default: demo)")
    p.add_argument("--config", metavar="FILE", help="the base config from a file instead (a config.yaml, a best.yaml)")
    p.add_argument("--space", metavar="FILE", required=True,
                   help="the search-space YAML: objective {metric, direction}, space {key: {low, high, log} or "
                        "{choices}}, optional pruner and seed (docs/sweep.md)")
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="trials of the study in all (complete, pruned or failed), across runs and machines")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the sweep folder: study.db, trials/, trials.jsonl, best.yaml (new, empty, or this sweep's)")
    p.add_argument("--storage", metavar="URL",
                   help="an Optuna RDB storage shared by many machines, e.g. postgresql://host/db "
                        "(default: sqlite:///DIR/study.db)")
    p.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: DIR's name)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="trials trained at once on this machine; the CPU cores are split between them (default 1)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files (sets data.root)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every trial, e.g. --set train.epochs=5 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganforge.cli.train import build_config
    from ganforge.errors import ConfigError
    from ganforge.sweep import SpaceError, start

    if args.preset and args.config:
        raise ConfigError(f"--preset {args.preset} and --config {args.config}: give one of them")
    flags = dict(epochs=None, max_steps=None, batch_size=None, seed=None, device=None)
    base = build_config(argparse.Namespace(preset=args.preset, config=args.config, data_dir=args.data_dir,
                                           set=args.set, **flags))
    try:
        return start(out=Path(args.out), base=base, space_file=Path(args.space), trials=args.trials,
                     workers=args.workers, storage=args.storage, study=args.study,
                     log=lambda line: print(line, flush=True))
    except SpaceError as exc:
        for line in exc.lines:
            print(f"ganforge: error: {line}", file=sys.stderr)
        return 2
