"""Writing outputs safely: refuse before starting, write under a temporary name, rename when complete.

A command that fails (a bad value found late, a full disk, Ctrl-C) leaves no half-written file or
folder behind, and never replaces what the user already had unless told to (`--overwrite`).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ganforge import fsutil
from ganforge.errors import UsageError


def check_output(out: Path, *, overwrite: bool = False, need_bytes: int = 0, what: str = "--out") -> Path:
    """Refuse, with one line, an output that exists, sits in no writable folder, or will not fit."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{what} {out}: already exists; choose another path or pass --overwrite")
    parent = out.absolute().parent
    if not parent.is_dir():
        kind = "is not a folder" if parent.exists() else "does not exist; create it first"
        raise UsageError(f"{what} {out}: {parent} {kind}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {out}: cannot write in {parent} (permission denied)")
    free = shutil.disk_usage(parent).free
    if need_bytes > free:
        raise UsageError(f"{what} {out}: needs about {need_bytes / 2**20:,.0f} MiB but {parent} has "
                         f"{free / 2**20:,.0f} MiB free; ask for fewer images")
    return out


@contextmanager
def atomic_output(out: Path, *, folder: bool = False, overwrite: bool = False, need_bytes: int = 0,
                  what: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside `out` (a fresh folder when `folder`); it becomes `out` on success
    (fsutil's atomic writes); a file-system error becomes one line, and nothing is left behind."""
    out = check_output(Path(out), overwrite=overwrite, need_bytes=need_bytes, what=what)
    try:
        with (fsutil.atomic_dir(out) if folder else fsutil.atomic_file(out)) as tmp:
            yield tmp
    except OSError as exc:
        raise UsageError(f"{what} {out}: cannot write ({exc.strerror or exc}); nothing was written") from None
