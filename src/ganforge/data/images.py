"""Decode a tree of image files (a folder or a zip of one) into one uint8 array, once.

Shared by the `folder`, `cifar10` (JPEG/PNG tree) and `celeba` readers. Files are listed in
sorted order (so `limit` and labels are reproducible), decoded with a thread pool (PIL releases
the GIL while decoding) behind a progress bar, as an image viewer shows them (EXIF orientation
applied, 16-bit samples scaled to 8 bits), then cropped and resized per image with PIL's
antialiased bilinear filter. Symbolic links are followed; broken or looping ones are left out. A
few unreadable files are skipped and reported; when more than half are unreadable the folder is
probably not what the user meant, so it stops.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from ganforge.errors import DataError

log = logging.getLogger("ganforge.data")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
Crop = Callable[[Image.Image], Image.Image]

_CHUNK = 256          # images per pool task: big enough to amortise scheduling, small for a smooth bar
_PROGRESS_FROM = 1000  # no bar for a handful of images (tests, tiny folders)
_PROGRESS_AFTER = 3.0  # seconds: a decode that ends sooner shows no bar at all


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTS)


@dataclass
class ImageTree:
    """The image files under a folder or inside a zip, as sorted posix paths relative to `base`."""

    origin: Path                      # the folder or the zip file
    names: list[str]
    fingerprint: list[tuple[str, int, int]]   # what the array cache keys on
    base: str = ""                    # prefix inside a zip (its single top-level folder), else ""
    is_zip: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def head(self, limit: int) -> ImageTree:
        return self if not limit else ImageTree(self.origin, self.names[:limit], self.fingerprint,
                                                self.base, self.is_zip)

    def labels(self) -> Optional[tuple[np.ndarray, tuple[str, ...]]]:
        """(int64 labels, class names) from first-level subfolders, or None if any file is loose."""
        if not self.names or any("/" not in n for n in self.names):
            return None
        first = [n.split("/", 1)[0] for n in self.names]
        classes = tuple(sorted(set(first)))
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[c] for c in first], dtype=np.int64), classes


def walk_images(path: Path, skipped: Optional[list[str]] = None) -> Iterator[tuple[str, os.stat_result]]:
    """(posix path relative to `path`, stat) of each image file below a folder, in sorted walk order.

    Symbolic links are followed as a file manager would, but each real folder is entered once (a link
    back up the tree is a loop, not an endless walk), and a broken or looping link is left out and
    named in `skipped` instead of stopping the walk.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        rel = os.path.relpath(dirpath, path)
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop or a duplicate
            dirnames[:] = []
            if skipped is not None:
                skipped.append(rel.replace(os.sep, "/"))
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not _is_image(f):
                continue
            name = f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}"
            try:
                yield name, os.stat(os.path.join(dirpath, f))
            except OSError:  # a broken link, or a chain of links that loops
                if skipped is not None:
                    skipped.append(name)


def has_images(path: Path) -> bool:
    """A zip file, or a folder with at least one image file below it (stops at the first)."""
    if path.is_file():
        return zipfile.is_zipfile(path)
    return path.is_dir() and next(walk_images(path), None) is not None


def list_tree(path: Path) -> ImageTree:
    """All image files under a folder, or in a zip; DataError when there is none or no such path."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    path = path.resolve()
    if path.is_file():
        return _list_zip(path)
    names, stats, skipped = [], [(str(path), 0, 0)], []
    for name, st in walk_images(path, skipped):
        names.append(name)
        stats.append((name, st.st_size, st.st_mtime_ns))
    if skipped:
        log.warning("%s: left out %d broken or looping symbolic link(s) (first: %s)", path, len(skipped),
                    skipped[0])
    if not names:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_EXTS)}) in this folder or below")
    # Sorted by full relative path, not walk order: os.walk visits a folder's files before its
    # subfolders, so "a/z.png" would come before "a/b/c.png" and `limit` would depend on the depth.
    order = np.argsort(names, kind="stable")
    return ImageTree(path, [names[i] for i in order], [stats[0]] + [stats[i + 1] for i in order])


def _list_zip(path: Path) -> ImageTree:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a zip file (expected a folder of images or a .zip of one)")
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(i.filename for i in z.infolist()
                           if not i.is_dir() and _is_image(i.filename) and not i.filename.startswith("__MACOSX/"))
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: unreadable zip file ({e})") from None
    if not names:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_EXTS)}) in this zip")
    # A zip of a folder holds `folder/...`: strip that one top level, as if the folder were given
    # (its class subfolders then become labels, not one class named after the zip's folder).
    tops = {n.split("/", 1)[0] for n in names}
    base = ""
    if len(tops) == 1 and all("/" in n for n in names):
        base = tops.pop() + "/"
        names = [n[len(base):] for n in names]
    st = os.stat(path)
    return ImageTree(path, names, [(str(path), st.st_size, st.st_mtime_ns)], base, True)


def as_displayed(im: Image.Image) -> Image.Image:
    """8-bit RGB as an image viewer shows the file: EXIF orientation applied, 16-bit grey scaled to
    0..255 (PIL's convert would clip them: a 16-bit PNG would come out white), grey, palette
    and RGBA turned into RGB."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - damaged EXIF: show the pixels as stored, as viewers do
        pass
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit samples (PNG greyscale; PIL gives "I" for some of them): 65535 -> 255.
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def centre_square(im: Image.Image) -> Image.Image:
    # the largest centred square, so a resize to size x size never changes the aspect ratio
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s)) if (w, h) != (s, s) else im


class _Opener:
    """Opens the tree's files by name; inside a zip, one ZipFile handle per decoding thread (ZipFile
    reads are not thread-safe), all closed at the end."""

    def __init__(self, tree: ImageTree):
        self.tree, self.local = tree, threading.local()
        self.opened: list[zipfile.ZipFile] = []

    def __call__(self, name: str):
        if not self.tree.is_zip:
            return open(self.tree.origin / name, "rb")
        if not hasattr(self.local, "zip"):
            self.local.zip = zipfile.ZipFile(self.tree.origin)
            self.opened.append(self.local.zip)
        return self.local.zip.open(self.tree.base + name)

    def close(self) -> None:
        for z in self.opened:
            z.close()


def _decode_one(f, *, size: int, crop: Crop, draft: bool) -> np.ndarray:
    """uint8 [3, size, size] from an open image file: as displayed, cropped, resized."""
    with Image.open(f) as im:
        if draft and im.format == "JPEG" and min(im.size) > 4 * size:
            # Let libjpeg decode at 1/2..1/8 scale (DCT scaling): many times faster on big
            # photos; at least 2x the target is kept, so the final resize still antialiases.
            k = 2 * size / min(im.size)
            im.draft(None, (max(1, int(im.size[0] * k)), max(1, int(im.size[1] * k))))
        im = crop(as_displayed(im))
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)  # antialiased when shrinking
        return np.asarray(im).transpose(2, 0, 1)  # PIL's [H, W, 3] -> the [3, H, W] of the array


def _run_pool(n: int, chunk: Callable[[int], int], *, workers: int, desc: str) -> None:
    """Call `chunk(start)` for every _CHUNK-th index on a thread pool, behind one progress bar."""
    from tqdm import tqdm

    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    # One bar, with the time to go, from the first torchrun rank only (when every rank decodes for
    # itself, several bars would overwrite each other on one terminal).
    quiet = n < _PROGRESS_FROM or os.environ.get("RANK", "0") != "0"
    with ThreadPoolExecutor(workers) as pool, tqdm(total=n, desc=f"decoding {desc}", unit="img", file=sys.stderr,
                                                   disable=quiet, delay=_PROGRESS_AFTER, leave=False) as bar:
        for done in pool.map(chunk, range(0, n, _CHUNK)):
            bar.update(done)


def _report_unreadable(tree: ImageTree, errors: list[tuple[str, str]], n: int) -> None:
    """A few unreadable files are skipped with a warning naming the first (in file order, not in the
    order the threads met them); more than half stop the decode."""
    if not errors:
        return
    errors.sort()
    first = f"first: {tree.origin / (tree.base + errors[0][0])}: {errors[0][1]}"
    if 2 * len(errors) > n:
        raise DataError(f"{tree.origin}: {len(errors)} of {n} images are unreadable or corrupt ({first}); stopping")
    log.warning("%s: skipped %d of %d images that are unreadable or corrupt (%s)", tree.origin,
                len(errors), n, first)


def decode_tree(tree: ImageTree, *, size: int, crop: Crop = centre_square, desc: str = "images",
                workers: int = 0, draft: bool = False,
                alloc: Optional[Callable[[tuple[int, ...]], np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [M, 3, size, size], int64 indices of the M files that decoded) for an ImageTree.

    draft: allow reduced-scale JPEG decoding; only for scale-invariant crops (a centre square),
    not for crops given in source pixels like CelebA's 108 px box.
    alloc: gives the output array (e.g. a memory-mapped cache file); default a new one in memory.
    When files are skipped the result is a compacted copy, not that array.
    """
    n = len(tree)
    shape = (n, 3, size, size)
    # Decoded straight into the final NCHW array (a cache file, when `alloc` maps one): no list of
    # per-image arrays is ever held, so peak memory is the set itself.
    out = alloc(shape) if alloc is not None else np.empty(shape, dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    errors: list[tuple[str, str]] = []  # list.append is atomic under the GIL: the threads share it
    open_file = _Opener(tree)

    def chunk(start: int) -> int:
        for i in range(start, min(start + _CHUNK, n)):
            name = tree.names[i]
            try:
                with open_file(name) as f:
                    out[i] = _decode_one(f, size=size, crop=crop, draft=draft)
                ok[i] = True
            except Exception as e:  # noqa: BLE001 - any failure on an untrusted file means "unreadable"
                errors.append((name, " ".join(f"{type(e).__name__}: {e}".split())))
        return min(_CHUNK, n - start)

    try:
        _run_pool(n, chunk, workers=workers, desc=desc)
    finally:
        open_file.close()
    _report_unreadable(tree, errors, n)
    keep = np.flatnonzero(ok)
    return (out if len(keep) == n else out[keep]), keep
