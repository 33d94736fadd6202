"""Where each dataset looks for its files, shared by the readers and `ganforge datasets`.

Each reader registers a `locate(root) -> Location` function: the candidate places it searches,
in order, and the first one that holds its files (or None). The table and the readers use the
same function, so what `ganforge datasets` reports present is what training will load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ganforge.errors import DataError


@dataclass(frozen=True)
class Location:
    searched: tuple[Path, ...]     # candidate places, in the order they are tried
    found: Optional[Path]          # the first that holds the dataset's files, or None
    note: str = ""                 # e.g. "downloads on first use" when nothing is found


LOCATORS: dict[str, Callable[[Optional[Path]], Location]] = {}


def register_locator(name: str):
    def add(fn: Callable[[Optional[Path]], Location]) -> Callable[[Optional[Path]], Location]:
        LOCATORS[name] = fn
        return fn

    return add


def existing(path: Path) -> Path:
    """The path itself, or a one-line DataError when it does not exist."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path


def first_with(candidates: list[Path], test: Callable[[Path], bool]) -> Optional[Path]:
    for c in candidates:
        try:
            if test(c):
                return c
        except OSError:  # an unreadable candidate is just not a match
            continue
    return None
