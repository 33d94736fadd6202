"""`ganforge datasets`: every dataset, what it is, whether the files its reader needs are there and where."""

from __future__ import annotations

import argparse

from ganforge.cli import layout


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the datasets, whether each one's files are present, and where",
                       description="List the datasets: what each is, whether the files its reader needs are "
                                   "present (in --data-dir, the cache folder or a copy shipped in a package), "
                                   "and where it looked.")
    p.add_argument("--data-dir", metavar="DIR", help="look in this folder, as `ganforge train --data-dir DIR` "
                                                     "would (default: the cache folder, $GANFORGE_CACHE)")
    p.set_defaults(func=run)


def describe(presence) -> str:
    """`yes`/`no` aside, the one-line answer: where the files are, or why they are not there."""
    if presence.present:
        return f"{presence.where}: {presence.path}"
    return presence.detail or "not found"


def run(args: argparse.Namespace) -> int:
    from ganforge.data import DATASETS, dataset_presence

    rows = []
    for name, spec in DATASETS.items():
        presence = dataset_presence(name, args.data_dir)
        rows.append((name, "yes" if presence.present else "no", f"{spec.description}\n{describe(presence)}"))
    print(layout.table(("dataset", "present", "what it is; where its files are"), rows, layout.width()))
    return 0
