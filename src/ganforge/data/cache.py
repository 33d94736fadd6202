"""Decode once: the decoded, resized uint8 array of a dataset is kept on disk and reloaded.

A reader does not decode; it returns a `Planned` load: the files it would read and how to decode
them. The plan's key hashes everything that changes the pixels: dataset name, split, the source
files (resolved path, size and mtime), output size, crop, limit and a reader version. A changed or
replaced source file therefore gives a new key, never a stale array. The same key is the data's
fingerprint (`ImageData.fingerprint`), which the evaluation's reference statistics are keyed by,
so they can be looked up without decoding anything.

Files are written through `ganforge.fsutil` (a unique temporary name, renamed into place), so a
crash, a decode error or a concurrent writer never leaves a partial file. The cache is optional: when its folder cannot
be written, loading goes on without it after one warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ganforge import fsutil
from ganforge.data.base import ImageData, default_cache_dir

log = logging.getLogger("ganforge.data")

# Bump when a reader's output changes for the same inputs (new crop rule, new resize filter...).
READER_VERSION = 3  # 2: mnist-5k rows interleaved by class; 3: 16-bit PNGs scaled, EXIF orientation applied

_warned = False  # the unwritable-cache warning is said once per process


def arrays_dir() -> Path:
    return default_cache_dir() / "arrays"


def cached_files() -> list[Path]:
    """The decoded arrays kept in the cache folder (for listings, clean-up and tests)."""
    d = arrays_dir()
    return sorted(d.glob("*.npz")) if d.is_dir() else []  # temporaries (.tmp-*.npz) included


def cache_unavailable(folder: Path, error: BaseException) -> None:
    """Say once that the cache cannot be written; the caller goes on without it."""
    global _warned
    if _warned:
        return
    _warned = True
    log.warning("warning: cache folder %s is not writable (%s); going on without a cache (set GANFORGE_CACHE "
                "to a writable folder to keep decoded data and reference statistics)", folder,
                f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}")


def fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(resolved path, size, mtime_ns) of each source file: cheap, and changes when a file does."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return out


def cache_key(*, name: str, split: str, sources: Sequence[tuple[str, int, int]], size: int,
              crop: str, limit: int, version: int = READER_VERSION) -> str:
    h = hashlib.sha256()
    h.update(repr((name, split, size, crop, limit, version)).encode())
    for item in sources:
        h.update(repr(item).encode())
    return h.hexdigest()[:20]


def cache_path(*, name: str, split: str, size: int, key: str) -> Path:
    return arrays_dir() / f"{name}-{split}-{size}px-{key}.npz"


def _save(path: Path, data: ImageData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_file(path) as tmp:  # a unique temporary name (it keeps the .npz suffix np.savez wants)
        # Uncompressed: the point of the cache is load speed, not disk space.
        np.savez(
            tmp,
            images=data.images.numpy(),
            labels=(data.labels.numpy() if data.labels is not None else np.zeros(0, np.int64)),
            has_labels=np.array(data.labels is not None),
            class_names=np.array(data.class_names, dtype=str),
            source=np.array(data.source, dtype=str),
        )


def _load(path: Path) -> ImageData:
    # allow_pickle=False: every member is a plain array, so a tampered cache cannot run code.
    with np.load(path, allow_pickle=False) as z:
        images = torch.from_numpy(z["images"])
        labels = torch.from_numpy(z["labels"]) if bool(z["has_labels"]) else None
        names = tuple(str(s) for s in z["class_names"])
        source = str(z["source"])
    return ImageData(images=images, labels=labels, class_names=names, source=source)


@dataclass
class Planned:
    """A reader's answer before any decoding: what it would produce, and the key of that content."""

    name: str
    split: str
    size: int
    key: str                                  # the fingerprint of the decoded array
    decode: Callable[[], ImageData]

    def load(self, *, cache: bool = True) -> ImageData:
        """The cached array for this key, or decode it, check it and (when the cache is writable) store it."""
        data = self._from_cache() if cache else None
        if data is None:
            t = time.perf_counter()
            data = check(self.decode())
            log.info("%s/%s: decoded %d images in %.1f s", self.name, self.split, len(data), time.perf_counter() - t)
            if cache:
                path = self.path()
                try:
                    _save(path, data)
                except OSError as e:
                    cache_unavailable(path.parent, e)
        data.fingerprint = self.key
        return data

    def path(self) -> Path:
        return cache_path(name=self.name, split=self.split, size=self.size, key=self.key)

    def _from_cache(self):
        path = self.path()
        try:
            if not path.is_file():
                return None
        except OSError:  # an unreadable cache folder is a miss
            return None
        t = time.perf_counter()
        try:
            data = _load(path)
        except Exception as e:  # a damaged cache is a cache miss, not an error
            log.warning("%s: unreadable cache file (%s); decoding again", path, e)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        log.info("%s/%s: %d images from cache %s (%.2f s)", self.name, self.split, len(data), path,
                 time.perf_counter() - t)
        return data


def plan(*, name: str, split: str, sources: Iterable[Path], size: int, crop: str = "", limit: int = 0,
         decode: Callable[[], ImageData], extra: Sequence[tuple[str, int, int]] = ()) -> Planned:
    """The planned load of these inputs. extra: fingerprint entries a reader computed itself (a folder
    lists and stats its files once)."""
    key = cache_key(name=name, split=split, sources=fingerprint(sources) + list(extra), size=size,
                    crop=crop, limit=limit)
    return Planned(name=name, split=split, size=size, key=key, decode=decode)


def check(data: ImageData) -> ImageData:
    """The invariants every reader promises; a failure here is a reader bug, not bad input."""
    x = data.images
    assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] in (1, 3), (x.dtype, x.shape)
    if data.labels is not None:
        assert data.labels.dtype == torch.int64 and data.labels.shape == (x.shape[0],)
    return data
