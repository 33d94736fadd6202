"""Writing outputs safely: refuse before starting, write under a temporary name, rename when complete.

A command that fails (a bad value found late, a full disk, Ctrl-C) leaves no half-written file or
folder behind, and never replaces what the user already had unless told to (`--overwrite`). Some
paths are refused even with `--overwrite`, because replacing them destroys work no command can
give back: a run folder or a folder holding one, anything inside a run's `checkpoints/`, a folder
a training holds the lock of, the current folder and its parents, and anything that is not a
regular file or folder (a device node or a FIFO would be replaced by a regular file).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from ganforge import fsutil
from ganforge.errors import ConfigError, UsageError

MAX_SCAN = 20_000  # entries looked at to tell whether a folder holds a run; a larger folder is refused


def is_run_folder(folder: Path) -> bool:
    """What `ganforge train` leaves in a run folder: its config and checkpoints, and from its first
    moment its lock, held (a `.lock` file alone is no sign: pytest, for one, leaves such files)."""
    folder = Path(folder)
    return ((folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir()
            or fsutil.lock_holder(folder) is not None)


def _holds_run(folder: Path, what: str) -> Optional[Path]:
    """The first run folder at or below `folder`, without following links; raises past MAX_SCAN entries."""
    seen = 0
    for top, dirs, _ in os.walk(folder):
        if is_run_folder(Path(top)):
            return Path(top)
        seen += len(dirs) + 1
        if seen > MAX_SCAN:
            raise UsageError(f"{what} {folder}: a folder of more than {MAX_SCAN:,} entries; "
                             "it may hold run folders, so it is not replaced: remove it yourself or choose "
                             "another path")
    return None


def _inside_checkpoints(path: Path) -> Optional[Path]:
    """The run whose `checkpoints/` holds `path` (or is `path`), else None."""
    for p in (path, *path.parents):
        if p.name == "checkpoints" and is_run_folder(p.parent):
            return p.parent
    return None


def check_protected(out: Path, what: str = "--out", *, own_file: bool = False) -> Path:
    """Refuse, with one line and even with --overwrite, a path whose replacement would destroy a run
    (a run folder, a folder holding one, a file a run holds), the current folder or a file that is not
    a regular file or folder; returns the resolved path. `own_file`: the command's own file in a run
    (report.html, audit.json), which it regenerates."""
    out = Path(out)
    try:
        real = out.resolve()
        st = os.stat(real) if real.exists() else None
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"{what} {out}: cannot be examined ({getattr(exc, 'strerror', None) or exc})") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise UsageError(f"{what} {out}: not a regular file or folder (a device, FIFO or socket); "
                         f"give a new file or folder name")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise UsageError(f"{what} {out}: is the current folder or one above it; give a new file or folder name")
    run = _inside_checkpoints(real)
    if run is not None:
        raise UsageError(f"{what} {out}: inside the checkpoints/ of run {run}; nothing may be written there")
    if st is not None and not own_file:
        run = next((p for p in real.parents if is_run_folder(p)), None)
        if run is not None:
            raise UsageError(f"{what} {out}: part of run {run} (its samples, records, files); it is never "
                             f"replaced, even with --overwrite; give a new name")
    if st is not None and stat.S_ISDIR(st.st_mode):
        holder = fsutil.lock_holder(real)
        if holder:
            raise UsageError(f"{what} {out}: a training holds this folder ({holder}); give a new folder name")
        run = _holds_run(real, what)
        if run is not None:
            kind = "is a run folder" if run == real else f"holds the run folder {run}"
            raise UsageError(f"{what} {out}: {kind}; it is never replaced, even with --overwrite; "
                             f"give a new folder name")
    return real


def check_writable(folder: Path, what: str, out: Path) -> None:
    """One line unless a file can be created in `folder`, the folder `out` will be written into."""
    try:
        fsutil.probe_writable(folder)
    except OSError as exc:
        raise UsageError(f"{what} {out}: cannot write in {folder} ({exc.strerror or exc})") from None


def check_writable_folder(folder: Path, what: str) -> None:
    """One line unless files can be created in `folder` (created when missing): checked before any
    work, so a long training or evaluation never ends at a path it cannot write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fsutil.probe_writable(folder)
    except OSError as exc:
        raise ConfigError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from None


def check_output(out: Path, *, overwrite: bool = False, need_bytes: int = 0, what: str = "--out",
                 own_file: bool = False) -> Path:
    """Refuse, with one line, an output that is protected, exists, sits in no writable folder, or will not fit."""
    out = Path(out)
    check_protected(out, what, own_file=own_file)
    # is_symlink too: a dangling link "does not exist", yet writing through it would create a file
    # wherever it points
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise UsageError(f"{what} {out}: already exists; choose another path or pass --overwrite")
    parent = out.absolute().parent
    if not parent.is_dir():
        kind = "is not a folder" if parent.exists() else "does not exist; create it first"
        raise UsageError(f"{what} {out}: cannot write there: {parent} {kind}")
    check_writable(parent, what, out)
    # Refused up front when it cannot fit: a full disk halfway through a million PNGs leaves nothing
    # (the atomic write removes its temporary), but only after all that work.
    free = shutil.disk_usage(parent).free
    if need_bytes > free:
        raise UsageError(f"{what} {out}: needs about {need_bytes / 2**20:,.0f} MiB but {parent} has "
                         f"{free / 2**20:,.0f} MiB free; ask for fewer images")
    return out


def check_output_folder(folder: Path, names: tuple[str, ...], *, overwrite: bool = False, what: str = "--out",
                        own_run: Optional[Path] = None) -> Path:
    """A folder that will receive `names`: not protected (unless it is `own_run`, the run a command
    writes its own files into), a folder or creatable, and none of `names` there unless `overwrite`."""
    folder = Path(folder)
    is_own = own_run is not None and folder.exists() and folder.resolve() == Path(own_run).resolve()
    if not is_own:
        check_protected(folder, what)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {folder}: exists and is not a folder")
    if not folder.exists():
        check_output(folder, what=what)
        return folder
    for name in names:
        check_output(folder / name, overwrite=overwrite or is_own, what=what, own_file=is_own)
    return folder


@contextmanager
def atomic_output(out: Path, *, folder: bool = False, overwrite: bool = False, need_bytes: int = 0,
                  what: str = "--out", own_file: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` (a fresh folder when `folder`); it becomes `out` on success
    (fsutil's atomic writes); a file-system error becomes one line, and nothing is left behind."""
    out = check_output(Path(out), overwrite=overwrite, need_bytes=need_bytes, what=what, own_file=own_file)
    try:
        with (fsutil.atomic_dir(out) if folder else fsutil.atomic_file(out)) as tmp:
            yield tmp
    except OSError as exc:
        raise UsageError(f"{what} {out}: cannot write ({exc.strerror or exc}); nothing was written") from None
