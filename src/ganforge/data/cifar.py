"""CIFAR-10: the original python batches (`cifar-10-batches-py`) or a `train/<class>/*.png|jpg` tree.

The python batches are pickles (dicts of a uint8 array and lists). They are read with an
unpickler that only accepts the few numpy globals an array needs, so a hostile file cannot run
code. The tree form (e.g. the JPEG copy in `shared/data/cifar10-jpg.tar.gz`) is read as a folder,
with the class folders mapped to CIFAR-10's official label order. Note that a JPEG copy is lossy:
its FID against published CIFAR-10 statistics is biased.

With no root the batches are looked for in the cache folder and otherwise downloaded by
torchvision (which checks the archive's MD5).
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganforge.data.base import ImageData, default_cache_dir, register_dataset
from ganforge.data.cache import Planned, plan
from ganforge.data.folder import plan_tree
from ganforge.data.images import list_tree
from ganforge.data.resize import resize_uint8
from ganforge.data.sources import Location, existing, first_with, register_locator
from ganforge.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_DIR = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

_reconstruct = np.ndarray(0).__reduce__()[0]  # numpy's array rebuilder, whatever module it lives in
# The only globals a CIFAR-10 batch pickle needs: a pickle from a download mirror or a shared folder
# can name any callable, and unpickling it would run it, so everything else is refused.
_ALLOWED = {
    # protocol-2 pickles written by Python 3 rebuild bytes with _codecs.encode(str, "latin1")
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def read_batch(path: Path) -> dict:
    """One python batch as a dict with str keys (the originals are Python 2 pickles)."""
    try:
        with open(existing(path), "rb") as f:
            # latin1: how numpy arrays pickled by Python 2 must be read
            d = _ArrayUnpickler(f, encoding="latin1").load()
    except DataError:
        raise
    except Exception as e:  # untrusted bytes can fail the unpickler in any way; all mean "not a batch"
        reason = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {reason})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(d).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _batches(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in BATCHES[split]:
        f = path / name
        d = read_batch(f)
        data, lab = d.get("data"), d.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{f}: 'data' is not a uint8 array of rows of 3072 pixels")
        if lab is None or len(lab) != len(data):
            raise DataError(f"{f}: {0 if lab is None else len(lab)} labels but {len(data)} images")
        lab = np.asarray(lab, dtype=np.int64)
        if lab.size and (lab.min() < 0 or lab.max() > 9):
            raise DataError(f"{f}: labels out of range 0..9")
        # rows of 3072 bytes: the 1,024 red values, then green, then blue, each row-major, so the
        # reshape gives NCHW directly with no transpose
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _kind(d: Path) -> Optional[str]:
    if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
        return "batches"
    if (d / "train").is_dir() or (d / "test").is_dir():
        return "tree"
    return None


def _candidates(root: Optional[Path]) -> list[Path]:
    if root is None:
        return [default_cache_dir() / BATCH_DIR]
    # the folder itself first, so a --data-dir pointing at the batches is what gets read
    return [root, root / BATCH_DIR, root / "cifar10-jpg", root / "cifar10"]


@register_locator("cifar10")
def locate(root: Optional[Path]) -> Location:
    cands = _candidates(root)
    found = first_with(cands, lambda d: _kind(d) is not None)
    return Location(tuple(cands), found, "downloads on first use, via torchvision" if root is None else "")


def _download() -> Path:
    cache = default_cache_dir()
    try:
        import torchvision.datasets as tvd

        tvd.CIFAR10(root=str(cache), train=True, download=True)  # MD5-checked, unpacks the batches
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"could not download cifar10 ({type(e).__name__}: {msg}); put the unpacked "
                        f"{BATCH_DIR} folder (from cifar-10-python.tar.gz) in {cache} or pass --data-dir "
                        f"DIR holding it or a train/<class>/ image tree") from None
    return cache / BATCH_DIR


@register_dataset("cifar10", channels=3, native_size=32, num_classes=10,
                  description="CIFAR-10, 50,000 train + 10,000 test, 32x32 colour (python batches or image tree)",
                  splits=("train", "test"), expected_files=(BATCH_DIR, "train/<class>/*.png|jpg"))
def plan_cifar10(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    loc = locate(root)
    d = loc.found
    if d is None:
        if root is not None:
            raise DataError(f"{root}: no CIFAR-10 here: expected {BATCH_DIR}/data_batch_1..5 or "
                            f"train/<class>/*.png|jpg (looked in {', '.join(map(str, loc.searched))})")
        d = _download()
    size = size or 32
    if _kind(d) == "tree":
        sub = d / split
        if not sub.is_dir():
            raise DataError(f"{sub}: no such folder (the CIFAR-10 tree needs {split}/<class>/)")
        # The official class order, not the folders' sorted names: a tree's labels then mean what the
        # batches' labels mean (and what a classifier trained on either expects).
        return plan_tree(list_tree(sub), name="cifar10", split=split, size=size, limit=limit, class_names=CLASSES)
    files = [d / name for name in BATCHES[split]]
    for f in files:
        existing(f)

    def decode() -> ImageData:
        images, labels = _batches(d, split)
        if limit:
            images, labels = images[:limit], labels[:limit]
        return ImageData(images=resize_uint8(torch.from_numpy(images), size), labels=torch.from_numpy(labels),
                         class_names=CLASSES, source=str(d))

    return plan(name="cifar10", split=split, sources=files, size=size, limit=limit, decode=decode)
