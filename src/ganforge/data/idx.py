"""MNIST and Fashion-MNIST: the four original IDX files, gzip'd or not.

IDX (LeCun's format): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, then each dimension as a big-endian uint32, then the data. The reader checks all of
it, so a truncated download or a swapped file stops with one line instead of garbage pixels.

Files are looked for directly in the root, in torchvision's `root/MNIST/raw` (or
`FashionMNIST/raw`) layout, or in `root/mnist` (`root/fashion-mnist`); with no root, in the
cache folder, and if absent there they are downloaded by torchvision (which checks their MD5s).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganforge.data.base import ImageData, default_cache_dir, register_dataset
from ganforge.data.cache import Planned, plan
from ganforge.data.resize import resize_uint8
from ganforge.data.sources import Location, existing, first_with, register_locator
from ganforge.errors import DataError

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
# name -> (torchvision class and folder name, short folder name, class names)
_VARIANTS = {
    "mnist": ("MNIST", "mnist", tuple(str(d) for d in range(10))),
    "fashion-mnist": ("FashionMNIST", "fashion-mnist", FASHION_CLASSES),
}


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzip'd or not), checked against its header."""
    raw = existing(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise DataError(f"{path}: truncated gzip file (the download was probably cut short)") from None
        except (OSError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    # IDX magic: two zero bytes, the type (0x08: unsigned byte), then the number of dimensions
    if magic != 0x0800 + ndim:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{0x800 + ndim:08x} "
                        f"(IDX unsigned bytes, {ndim} dimensions); is this the right file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file (header cut short)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    if len(raw) - header != count:
        what = "truncated" if len(raw) - header < count else "corrupt"
        raise DataError(f"{path}: {what} IDX file: header says {'x'.join(map(str, dims))} = {count} "
                        f"bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _split_files(directory: Path, split: str) -> Optional[tuple[Path, ...]]:
    """The split's files in `directory` (images, labels), or None when one is missing."""
    found = [_find(directory, stem) for stem in _FILES[split]]
    return tuple(p for p in found if p is not None) if all(found) else None


def _has_split(directory: Path, split: str) -> bool:
    return _split_files(directory, split) is not None


def _candidates(name: str, root: Optional[Path]) -> list[Path]:
    tv_name, short, _ = _VARIANTS[name]
    if root is None:
        return [default_cache_dir() / tv_name / "raw"]
    return [root, root / tv_name / "raw", root / short]


def _locate(name: str, root: Optional[Path]) -> Location:
    cands = _candidates(name, root)
    found = first_with(cands, lambda d: _has_split(d, "train"))
    note = "downloads on first use, via torchvision" if root is None and found is None else ""
    return Location(tuple(cands), found, note)


def _download(name: str) -> Path:
    tv_name = _VARIANTS[name][0]
    cache = default_cache_dir()
    target = cache / tv_name / "raw"
    wanted = ", ".join(f"{s}.gz" for split in _FILES.values() for s in split)
    try:
        import torchvision.datasets as tvd

        # torchvision checks each file's MD5 and keeps them in cache/<tv_name>/raw.
        for train in (True, False):
            getattr(tvd, tv_name)(root=str(cache), train=train, download=True)
    except Exception as e:
        raise DataError(f"could not download {name} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"put {wanted} in {target} or pass --data-dir DIR holding them") from None
    return target


def _plan(name: str, *, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    loc = _locate(name, root)
    directory = loc.found
    if directory is None:
        if root is not None:
            existing(root)
            stems = ", ".join(f"{s}[.gz]" for s in _FILES[split])
            raise DataError(f"{root}: no {name} IDX files ({stems}) there nor in "
                            f"{', '.join(str(c) for c in loc.searched[1:])}")
        directory = _download(name)
    files = _split_files(directory, split)
    if files is None:
        raise DataError(f"{directory}: missing {name} {split} files {' and '.join(_FILES[split])}[.gz]")
    img_path, lab_path = files
    classes = _VARIANTS[name][2]

    def decode() -> ImageData:
        images = read_idx(img_path, ndim=3)
        labels = read_idx(lab_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(f"{lab_path}: {len(labels)} labels but {img_path.name} has {len(images)} images")
        if labels.size and labels.max() >= len(classes):
            raise DataError(f"{lab_path}: label {int(labels.max())} out of range 0..{len(classes) - 1}")
        if limit:
            images, labels = images[:limit], labels[:limit]
        # copy: frombuffer's array is read-only, which torch.from_numpy warns about; unsqueeze adds
        # the channel: [N, 28, 28] -> [N, 1, 28, 28]
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        return ImageData(images=resize_uint8(x, size), labels=torch.from_numpy(labels.astype(np.int64)),
                         class_names=classes, source=str(img_path))

    return plan(name=name, split=split, sources=[img_path, lab_path], size=size or 28, limit=limit, decode=decode)


@register_dataset("mnist", channels=1, native_size=28, num_classes=10,
                  description="MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grey",
                  splits=("train", "test"), expected_files=_FILES["train"] + _FILES["test"])
def plan_mnist(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    return _plan("mnist", root=root, split=split, size=size, limit=limit)


@register_dataset("fashion-mnist", channels=1, native_size=28, num_classes=10,
                  description="Fashion-MNIST (Zalando) clothing, 60,000 train + 10,000 test, 28x28 grey",
                  splits=("train", "test"), expected_files=_FILES["train"] + _FILES["test"])
def plan_fashion_mnist(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    return _plan("fashion-mnist", root=root, split=split, size=size, limit=limit)


register_locator("mnist")(lambda root: _locate("mnist", root))
register_locator("fashion-mnist")(lambda root: _locate("fashion-mnist", root))
