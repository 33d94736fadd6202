"""Decode once: the decoded, resized uint8 array of a dataset is kept on disk and memory-mapped.

A reader does not decode; it returns a `Planned` load: the files it would read and how to decode
them. The plan's key hashes everything that changes the pixels: dataset name, split, the source
files (resolved path, size and mtime), output size, crop, limit and a reader version. A changed or
replaced source file therefore gives a new key, never a stale array. The same key is the data's
fingerprint (`ImageData.fingerprint`), which the evaluation's reference statistics are keyed by,
so they can be looked up without decoding anything.

A cache entry is a folder `<name>-<split>-<size>px-<key>.array/` holding `images.npy` (the raw
uint8 array), `labels.npy` and `meta.json` (format version, shape, class names, source). A `.npy`
rather than an `.npz` because only a plain array file can be memory-mapped: every process (every
torchrun rank) maps the same file, so the pages are the kernel's page cache, shared and
reclaimable, not a private copy per process. The folder is written through `fsutil.atomic_dir`
(a temporary name, renamed into place), so a crash, a decode error or a concurrent writer never
leaves a partial entry. A damaged entry or one of another format version is a miss: one warning,
then the data is decoded again. The cache is optional: when its folder cannot be written,
loading goes on without it after one warning.

Under torchrun (`dist` given) one process per host decodes: local rank 0 loads or decodes and
writes the entry while the other local ranks wait, then they map the same file. The ranks agree on
the outcome in one gather, so a failed decode stops every rank with the same one-line error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ganforge import errors, fsutil
from ganforge.data.base import ImageData, default_cache_dir

if TYPE_CHECKING:
    from ganforge.runtime import Dist

log = logging.getLogger("ganforge.data")

# Bump when a reader's output changes for the same inputs (new crop rule, new resize filter...).
READER_VERSION = 3  # 2: mnist-5k rows interleaved by class; 3: 16-bit PNGs scaled, EXIF orientation applied
# Bump when the layout of an entry changes; an entry of another version is decoded again, not misread.
FORMAT = 1  # 1: images.npy + labels.npy + meta.json in one folder (the .npz files before it are ignored)
SUFFIX = ".array"

_warned = False  # the unwritable-cache warning is said once per process


def arrays_dir() -> Path:
    return default_cache_dir() / "arrays"


def cached_files() -> list[Path]:
    """The decoded-array entries in the cache folder (for listings, clean-up and tests)."""
    d = arrays_dir()
    return sorted(d.glob(f"*{SUFFIX}")) if d.is_dir() else []  # temporaries (.tmp-*.array) included


def cache_unavailable(folder: Path, error: BaseException, *, every_rank: bool = False) -> None:
    """Say once that the cache cannot be written; the caller goes on without it."""
    global _warned
    if _warned:
        return
    _warned = True
    ranks = ", so every rank decodes the data for itself" if every_rank else ""
    log.warning("warning: cache folder %s is not writable (%s); going on without a cache%s (set GANFORGE_CACHE "
                "to a writable folder to keep decoded data and reference statistics)", folder,
                f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}", ranks)


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
    # 80 bits of the digest: a collision between two entries of one cache folder would take about
    # 2^40 of them, and the name stays short enough to read in a listing
    return h.hexdigest()[:20]


def cache_path(*, name: str, split: str, size: int, key: str) -> Path:
    return arrays_dir() / f"{name}-{split}-{size}px-{key}{SUFFIX}"


def _save(path: Path, data: ImageData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_dir(path) as tmp:
        _fill(tmp, data, images_written=False)


def _fill(tmp: Path, data: ImageData, *, images_written: bool) -> None:
    """Write an entry's files into its temporary folder (images.npy too, unless decoded straight into it)."""
    images = data.images.numpy()
    if not images_written:
        np.save(tmp / "images.npy", np.ascontiguousarray(images))  # uncompressed: it is mapped, not read
    if data.labels is not None:
        np.save(tmp / "labels.npy", data.labels.numpy())
    meta = {"format": FORMAT, "shape": list(images.shape), "dtype": str(images.dtype),
            "has_labels": data.labels is not None, "class_names": list(data.class_names), "source": data.source}
    (tmp / "meta.json").write_text(json.dumps(meta) + "\n")


def _file_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file of `shape` uint8, mapped writable, its blocks reserved on disk first: a full disk
    is then an OSError here, not a SIGBUS when a page of the mapping is first written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


class _Unusable(Exception):
    """An entry that exists but cannot be used as it is (damaged, or another format version)."""


def _load(path: Path) -> ImageData:
    """The entry as an ImageData whose images are a tensor over the memory-mapped file."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise _Unusable(f"{path / 'meta.json'}: unreadable ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise _Unusable(f"{path}: cache entry of format version {found} (this ganforge reads {FORMAT})")
    # Copy-on-write ("c") rather than read-only ("r"): the pages are still the shared page cache, but
    # the array is writable, so torch.from_numpy has nothing to warn about and an accidental in-place
    # write copies one page privately instead of crashing the process on a read-only mapping.
    try:
        images = np.load(path / "images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(path / "labels.npy", allow_pickle=False) if meta["has_labels"] else None
    except (OSError, ValueError, KeyError) as e:
        raise _Unusable(f"{path / 'images.npy'}: truncated or unreadable ({e})") from None
    if list(images.shape) != meta.get("shape") or images.dtype != np.uint8 or \
            (labels is not None and labels.shape != (images.shape[0],)):
        raise _Unusable(f"{path / 'images.npy'}: holds {images.dtype} {list(images.shape)}, "
                        f"meta.json says {meta.get('dtype')} {meta.get('shape')}")
    return ImageData(images=torch.from_numpy(images), labels=None if labels is None else torch.from_numpy(labels),
                     class_names=tuple(str(s) for s in meta.get("class_names", ())), source=str(meta.get("source", "")),
                     mapped=True)


DIGEST_SPAN = 4 << 20  # bytes read from each end of a source file for its content digest


def content_digest(what: tuple, sources) -> str:
    """A digest of what the files hold, not where they are: the same data in two folders agrees,
    MNIST and Fashion-MNIST (same names and sizes) do not. Head and tail of each file, so a data
    set of gigabytes costs milliseconds. A folder's (path, size, mtime) entry stands in by its name
    and size."""
    h = hashlib.sha256(repr(what).encode())
    for src in sources:
        if isinstance(src, tuple):
            h.update(repr((Path(src[0]).name, src[1])).encode())
            continue
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(repr((Path(src).name, size)).encode() + f.read(DIGEST_SPAN))
            f.seek(max(size - DIGEST_SPAN, 0))
            h.update(f.read(DIGEST_SPAN))
    return h.hexdigest()[:16]


@dataclass
class Planned:
    """A reader's answer before any decoding: what it would produce, and the key of that content."""

    name: str
    split: str
    size: int
    key: str                                  # the fingerprint of the decoded array
    decode: Callable[..., ImageData]
    # decode(alloc) fills the array alloc(shape) returns: a reader of many files decodes straight
    # into the cache entry's file, so no private copy of the whole set is ever held.
    into_file: bool = False
    sources: tuple = ()                       # (name, size) entries or paths of the files read
    crop: str = ""
    limit: int = 0

    def content_digest(self) -> str:
        """A digest of what the files hold, not where they are (`content_digest` below)."""
        return content_digest((self.name, self.split, self.size), self.sources)

    def reference_key(self) -> str:
        """What the evaluation's reference statistics are keyed by. The files a reader opens stand in it
        by their content (`content_digest`) rather than their path and time, so a data set copied,
        unpacked again or mounted anew keeps its cached Inception statistics (minutes to an hour of a
        CPU). A folder's or zip's listing keeps its paths and times: its files stand in the digest by
        name and size alone, which two folders of same-sized uncompressed images would share."""
        files = [s for s in self.sources if not isinstance(s, tuple)]
        listed = [s for s in self.sources if isinstance(s, tuple)]
        digest = content_digest((self.name, self.split, self.size), files)
        h = hashlib.sha256(repr((digest, listed, self.crop, self.limit, READER_VERSION)).encode())
        return "content:" + h.hexdigest()[:20]

    def load(self, *, cache: bool = True, dist: Optional[Dist] = None) -> ImageData:
        """The cached array for this key, or decode it, check it and (when the cache is writable) store it.

        dist: under torchrun, decode once per host (local rank 0) and let the other ranks map its file.
        """
        if dist is None or not dist.enabled or not cache:
            data, _ = self._load_here(cache=cache)
        else:
            data = self._load_once_per_host(dist)
        # the reference key reads the ends of every file: only an evaluation asks for it
        data.fingerprint, data.key_of_content = self.key, self.reference_key
        return data

    def path(self) -> Path:
        return cache_path(name=self.name, split=self.split, size=self.size, key=self.key)

    def _load_here(self, *, cache: bool, every_rank: bool = False) -> tuple[ImageData, bool]:
        """(the data, whether it is in the cache now): from the cache, or decoded (and stored)."""
        data = self._from_cache() if cache else None
        if data is not None:
            return data, True
        t = time.perf_counter()
        path = self.path()
        data = self._decode_into_entry(path) if cache and self.into_file else None
        if data is None:
            data = check(self.decode())
        log.info("%s/%s: decoded %d images in %.1f s", self.name, self.split, len(data), time.perf_counter() - t)
        if data.mapped:  # decoded straight into the entry, which is now in place
            return data, True
        if not cache:
            return data, False
        try:
            _save(path, data)
        except OSError as e:
            if not (path / "meta.json").is_file():  # not a concurrent writer that got there first
                cache_unavailable(path.parent, e, every_rank=every_rank)
                return data, False
        # Map the file just written and drop the decoded copy: its private memory goes back to the system.
        mapped = self._from_cache(quiet=True)
        return (mapped, True) if mapped is not None else (data, False)

    def _decode_into_entry(self, path: Path) -> Optional[ImageData]:
        """Decode straight into a new entry's images.npy; None when the cache folder cannot take it (the
        caller then decodes into memory and says why once)."""
        target: dict[str, np.memmap] = {}

        def alloc(shape: tuple[int, ...]) -> np.ndarray:
            target["array"] = _file_array(tmp / "images.npy", shape)
            return target["array"]

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with fsutil.atomic_dir(path) as tmp:
                data = check(self.decode(alloc))
                array = target.get("array")
                # The reader returns the mapped array itself unless it dropped unreadable files (a copy).
                into = array is not None and data.images.data_ptr() == array.ctypes.data
                if array is not None and into:
                    array.flush()
                _fill(tmp, data, images_written=into)
        except OSError:
            return None
        return _load(path)  # the entry just written, mapped; the decoding mapping goes with `data`

    def _load_once_per_host(self, dist: Dist) -> ImageData:
        """Local rank 0 loads or decodes while the other local ranks wait; then they map its file.

        The wait is one gather of every rank's outcome (over `Dist.patient_gather`, which outlasts a
        long decode), so a decode that fails on any host stops every rank with the same error.
        """
        data, outcome = None, ("wait", "")
        failed: Optional[Exception] = None
        if dist.local_rank == 0:
            try:
                data, stored = self._load_here(cache=True, every_rank=True)
                outcome = ("stored" if stored else "private", "")
            except Exception as e:  # noqa: BLE001 - passed on, so the waiting ranks do not wait forever
                outcome, failed = ("error", f"{type(e).__name__}\0{e}"), e
        outcomes = dist.patient_gather(outcome)
        first = next((r for r, (kind, _) in enumerate(outcomes) if kind == "error"), None)
        if first is not None:  # every rank stops with the first failed host's error
            if first == dist.rank and failed is not None:
                raise failed
            raise _reraised(outcomes[first][1])
        if data is not None:
            return data
        mine = outcomes[dist.rank - dist.local_rank]  # this host's local rank 0 (ranks are numbered by host)
        if mine[0] == "stored":
            data = self._from_cache(quiet=True)
            if data is not None:
                return data
        data, _ = self._load_here(cache=False)  # the cache could not be written: decode for myself
        return data

    def _from_cache(self, *, quiet: bool = False) -> Optional[ImageData]:
        path = self.path()
        try:
            if not path.is_dir():
                return None
        except OSError:  # an unreadable cache folder is a miss
            return None
        t = time.perf_counter()
        try:
            data = _load(path)
        except _Unusable as e:  # a damaged or outdated entry is a cache miss, not an error
            log.warning("warning: %s; decoding again", e)
            try:
                fsutil.remove_dir(path)
            except OSError:
                pass
            return None
        if not quiet:
            log.info("%s/%s: %d images from cache %s (%.2f s)", self.name, self.split, len(data), path,
                     time.perf_counter() - t)
        return data


def _reraised(detail: str) -> Exception:
    """Another rank's error, as this rank's: the same class when it is one of ganforge's, same message."""
    cls_name, message = detail.split("\0", 1)
    cls = getattr(errors, cls_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.GanforgeError):
        return cls(message)
    return errors.GanforgeError(f"local rank 0 failed to load the data: {cls_name}: {message}")


def plan(*, name: str, split: str, sources: Iterable[Path], size: int, crop: str = "", limit: int = 0,
         decode: Callable[..., ImageData], extra: Sequence[tuple[str, int, int]] = (),
         into_file: bool = False) -> Planned:
    """The planned load of these inputs. extra: fingerprint entries a reader computed itself (a folder
    lists and stats its files once). into_file: `decode(alloc)` decodes into the array `alloc` returns."""
    sources = list(sources)
    key = cache_key(name=name, split=split, sources=fingerprint(sources) + list(extra), size=size,
                    crop=crop, limit=limit)
    # sorted: the content digest must not depend on the order a reader happened to list its files in
    return Planned(name=name, split=split, size=size, key=key, decode=decode, into_file=into_file,
                   sources=tuple(sorted(Path(p) for p in sources)) + tuple(sorted(extra)), crop=crop, limit=limit)


def check(data: ImageData) -> ImageData:
    """The invariants every reader promises; a failure here is a reader bug, not bad input."""
    x = data.images
    assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] in (1, 3), (x.dtype, x.shape)
    if data.labels is not None:
        assert data.labels.dtype == torch.int64 and data.labels.shape == (x.shape[0],)
    return data
