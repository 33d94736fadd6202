"""`ganforge presets`: every named configuration, the dataset it needs, whether its files were found,
and the exact command that starts it."""

from __future__ import annotations

import argparse
import shlex

from ganforge.cli import layout


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the named configurations, the data each needs, and how to start it",
                       description="List the named configurations: for each, the dataset it needs, whether "
                                   "its files were found (in --data-dir, the cache or a copy shipped in a "
                                   "package) and the command that starts it.")
    p.add_argument("--data-dir", metavar="DIR", help="look for each preset's dataset in this folder, as "
                                                     "`ganforge train --data-dir DIR` would")
    p.set_defaults(func=run)


def start_command(name: str, presence, data_dir) -> list[str]:
    """The pieces of `ganforge train` for this preset: --data-dir only where the files are found there,
    or a DIR to fill in where they are found nowhere and are not downloaded on first use."""
    words = ["ganforge train", f"--preset {name}"]
    if presence.present and presence.where == "--data-dir":
        words.append(f"--data-dir {shlex.quote(str(data_dir))}")
    elif not presence.present and not presence.downloads:
        words.append("--data-dir DIR")
    return words


def run(args: argparse.Namespace) -> int:
    import ganforge.presets  # noqa: F401  (fills PRESETS)
    from ganforge.config import PRESETS, preset_config
    from ganforge.data import dataset_presence

    columns = layout.width()
    indent = max(len(n) for n in PRESETS.names()) + 2
    lines, ready = [], 0
    for name in PRESETS.names():
        cfg = preset_config(name)
        presence = dataset_presence(cfg.data.name, args.data_dir or cfg.data.root)
        if not presence.present and args.data_dir:  # not in DIR, but maybe where it needs no --data-dir
            elsewhere = dataset_presence(cfg.data.name, cfg.data.root)
            presence = elsewhere if elsewhere.present else presence
        ready += presence.present
        if presence.present:
            status = f"found ({presence.where})"
        elif presence.downloads:
            status = "not here, downloads on first use (offline: --data-dir DIR)"
        else:  # the reasons are long (what was searched, archives to unpack): `ganforge datasets` has them
            where = f" --data-dir {args.data_dir}" if args.data_dir else ""
            status = f"not found; `ganforge datasets{where}` says why"
        text = layout.wrap(cfg.description, columns - indent)
        timing = PRESETS.get(name).timing
        if timing is not None:
            text += layout.wrap(timing.describe(), columns - indent)
        text += layout.wrap(f"data: {cfg.data.name}, {status}", columns - indent)
        lines.append(f"{name:<{indent}}{text[0]}")
        lines += [" " * indent + t for t in text[1:]]
        lines += layout.command(start_command(name, presence, args.data_dir), indent, columns)
        lines.append("")
    lines += layout.wrap(f"{ready} of {len(PRESETS.names())} presets have their data here; `ganforge datasets` says "
                         f"where each dataset looks.", columns)
    print(layout.cleanup(lines))
    return 0
