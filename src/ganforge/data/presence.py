"""Is a dataset present? The files its reader needs, checked where the reader will look for them.

`dataset_presence(name, root)` starts from the reader's own locator (`sources.LOCATORS`, the same
search training does) and adds the checks a locator leaves to the reader, so that "present" means
"training will read it": a folder must hold images, not only archives; IDX files must be the data
set they are named for (MNIST and Fashion-MNIST use the same file names); CIFAR-10's batches must
all be there. The answer also says where the files are (`--data-dir`, the cache, or the copy
embedded in an installed package) and, when absent, what was searched and what to do.
`ganforge datasets` and `ganforge presets` print these answers.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ganforge.data.base import default_cache_dir
from ganforge.data.images import IMAGE_EXTS
from ganforge.data.sources import LOCATORS

ARCHIVES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Presence:
    name: str
    present: bool
    where: str                  # "--data-dir", "cache" or "embedded copy"; "" when absent
    path: Optional[Path]        # the files found, or None
    detail: str = ""            # when absent: what was searched, why it does not count, what to do
    downloads: bool = False     # absent here, but fetched on first use when there is a network


# dataset name -> check(found path) -> why those files are not what the reader needs, or None.
VERIFIERS: dict[str, Callable[[Path], Optional[str]]] = {}


def register_verifier(name: str):
    def add(fn: Callable[[Path], Optional[str]]) -> Callable[[Path], Optional[str]]:
        VERIFIERS[name] = fn
        return fn

    return add


def dataset_presence(name: str, root: Union[str, Path, None] = None) -> Presence:
    """Whether the files of dataset `name` are there (in `root`, else the cache or a shipped copy)."""
    path = Path(root).expanduser() if root not in (None, "") else None
    locate = LOCATORS.get(name)
    if locate is None:
        return Presence(name, False, "", None, "ganforge cannot tell (the reader registers no locator)")
    loc = locate(path)
    if path is not None and not path.exists() and loc.found is None:
        return Presence(name, False, "", None, f"{path} does not exist")
    if loc.found is not None:
        problem = VERIFIERS.get(name, lambda _: None)(loc.found)
        if problem is None:
            return Presence(name, True, _where(loc.found, path), loc.found)
        detail = problem
    else:
        detail = f"not in {_compact(loc.searched)}" if loc.searched else ""
        detail = "; ".join(s for s in (detail, loc.note) if s)
    hint = _archive_hint(name, path)
    return Presence(name, False, "", None, "; ".join(s for s in (detail, hint) if s),
                    downloads=loc.found is None and path is None and "download" in loc.note)


def _compact(paths: tuple[Path, ...]) -> str:
    """`/a/b/{., x, y/z}` for the candidate folders searched: one line of a listing, not one per folder."""
    if not paths:
        return "-"
    if len(paths) == 1:
        return str(paths[0])
    base = Path(os.path.commonpath(paths))
    rel = [str(p.relative_to(base)) for p in paths]
    return f"{base}/{{{', '.join(rel)}}}"


def _where(found: Path, root: Optional[Path]) -> str:
    if root is not None and _inside(found, root):
        return "--data-dir"
    if _inside(found, default_cache_dir()):
        return "cache"
    return "embedded copy"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _archive_hint(name: str, root: Optional[Path]) -> str:
    """Data often arrives as tarballs, which no reader opens: say so, and how to unpack them."""
    if root is None:
        return ""
    if root.is_file():
        found = [root] if root.name.lower().endswith(ARCHIVES) else []
    else:
        found = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(ARCHIVES))
    if not found:
        return ""
    # the archive named after this dataset (cifar10-jpg.tar.gz for cifar10) is the one to suggest
    first = next((p for p in found if p.name.lower().startswith(name)), found[0])
    names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    return (f"{names} {'is an archive' if len(found) == 1 else 'are archives'}, which no reader opens: "
            f"tar xf {first} -C DIR, then pass the unpacked folder as --data-dir")


def _first_image(folder: Path) -> Optional[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS):
                return Path(dirpath) / f
    return None


def _zip_problem(path: Path) -> Optional[str]:
    if not zipfile.is_zipfile(path):
        return f"{path} is not a zip file"
    with zipfile.ZipFile(path) as z:
        if not any(n.lower().endswith(IMAGE_EXTS) for n in z.namelist()):
            return f"{path} holds no png/jpg/jpeg/webp/bmp images"
    return None


@register_verifier("folder")
def _folder(path: Path) -> Optional[str]:
    if path.is_file():
        return _zip_problem(path)
    return None if _first_image(path) is not None else f"no png/jpg/jpeg/webp/bmp images under {path}"


@register_verifier("celeba")
def _celeba(path: Path) -> Optional[str]:
    return _zip_problem(path) if path.is_file() else None


# The first training labels of each data set: the IDX files share their names, not their contents.
_FIRST_LABELS = {"mnist": bytes([5, 0, 4, 1, 9, 2, 1, 3, 1, 4]), "fashion-mnist": bytes([9, 0, 0, 3, 0, 2, 7, 2, 5, 5])}
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _idx_verifier(name: str) -> Callable[[Path], Optional[str]]:
    def check(folder: Path) -> Optional[str]:
        for stem in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"):
            f = folder / stem
            if f.is_file():
                try:
                    with open(f, "rb") as raw:
                        head = raw.read(2)
                    with (gzip.open(f) if head == b"\x1f\x8b" else open(f, "rb")) as fh:
                        first = fh.read(18)[8:]
                except (OSError, EOFError):
                    return None  # a damaged file is the reader's to report, with its own message
                other = next((n for n, sig in _FIRST_LABELS.items() if n != name and first == sig), None)
                if other is not None:
                    return f"{folder} holds {_TITLES[other]}'s IDX files, not {_TITLES[name]}'s"
        return None

    return check


register_verifier("mnist")(_idx_verifier("mnist"))
register_verifier("fashion-mnist")(_idx_verifier("fashion-mnist"))


@register_verifier("cifar10")
def _cifar10(folder: Path) -> Optional[str]:
    from ganforge.data.cifar import BATCHES

    if (folder / "train").is_dir() or (folder / "test").is_dir():
        train = folder / "train"
        return None if train.is_dir() and _first_image(train) else f"no images under {train}/<class>/"
    missing = [b for b in BATCHES["train"] if not (folder / b).is_file() or (folder / b).stat().st_size == 0]
    return f"{folder} lacks {', '.join(missing)} (or they are empty)" if missing else None


@register_verifier("mnist-5k")
def _mnist5k(path: Path) -> Optional[str]:
    """The reader takes any file as the CSV: check that its first row is 784 pixels and a label."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path) if gz else open(path, "rb")) as f:
            row = f.readline(20000).split(b",")
    except (OSError, EOFError):
        row = []
    return None if len(row) == 785 else f"{path} is not the mnist-5k CSV (rows of 784 pixels and a label)"
