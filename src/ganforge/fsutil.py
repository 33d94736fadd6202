"""Atomic writes and folder locks: a file or folder appears whole under its final name or not at all.

Everything the library writes goes through `atomic_file` (a file) or `atomic_dir` (a folder such as
a checkpoint): the content is written under a temporary name beside the target, fsync'd, and renamed
into place, so a process killed at any moment leaves either the old version or the new one.
Temporary names start with `.tmp-` and carry the process id and a random token, so concurrent
writers (threads, processes, ranks, two evaluations sharing a cache) never share one; `clean_stale`
removes what killed writers left behind. `FolderLock` is an OS lock (flock) that the kernel releases
when its process dies, however it dies. `sha256_file` is the one hasher of a file's content (the
feature networks' checksums in every evaluation record, the classifier weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

TMP, OLD = ".tmp-", ".old-"  # prefixes of in-progress writes and of replaced folders awaiting deletion


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks: a 90 MB network is never held in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe_writable(folder: Path) -> None:
    """Create and remove a file in `folder`; OSError when that fails. os.access says yes to root even
    where the file system is read-only, so only trying tells."""
    probe = temp_path(Path(folder) / "write-check")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    Path(probe).unlink(missing_ok=True)


def temp_path(path: Path) -> Path:
    """A fresh name beside `path` that no other writer uses; it keeps the suffix (savefig, np.save need it)."""
    path = Path(path)
    return path.with_name(f"{TMP}{path.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic there
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; it replaces `path` on success.

        with atomic_file(run / "loss_curves.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def write_text(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes `path`, replacing any folder there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside
    (`.old-*`), the new one renamed in, and the old one deleted: the content is never deleted
    before its replacement is complete, and `clean_stale` puts an aside copy back if a crash
    left nothing under `path`.
    """
    path = Path(path)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            fsync(f)
        aside = _move_aside(path)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)
            raise
        fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a folder so that a crash midway leaves no half-deleted copy under its name."""
    doomed = temp_path(path)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _move_aside(path: Path) -> Optional[Path]:
    if not path.exists():
        return None
    aside = path.with_name(f"{OLD}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    return aside


def clean_stale(folder: Path) -> list[str]:
    """Remove temporaries left in `folder` by killed writers; restore replaced folders a crash orphaned.

    Call it only while holding the folder's lock (or when no other process can be writing there).
    Returns the names it removed or restored.
    """
    folder = Path(folder)
    done = []
    if not folder.is_dir():
        return done
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(OLD):
            original = folder / entry.name[len(OLD):].rsplit("-", 2)[0]
            if not original.exists():
                os.replace(entry, original)  # the crash came between the two renames: the old copy is whole
                done.append(original.name)
                continue
        elif not entry.name.startswith(TMP):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        done.append(entry.name)
    return done


def lock_holder(folder: Path) -> Optional[str]:
    """Who holds `folder`'s FolderLock ("pid N on HOST"), or None when nobody does; takes nothing."""
    import fcntl

    try:
        fd = os.open(Path(folder) / FolderLock.NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)  # closing also drops the shared lock taken to test
    return None


class FolderBusy(OSError):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a folder (`<folder>/.lock`), held until `release()` or the process ends.

    The lock file keeps the holder's pid and host, for the message another process shows.
    """

    NAME = ".lock"

    def __init__(self, folder: Path):
        import fcntl

        self.path = Path(folder) / self.NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise FolderBusy(f"{folder} is in use by another process ({holder})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
