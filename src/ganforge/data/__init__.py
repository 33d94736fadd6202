"""Datasets: read MNIST, Fashion-MNIST, CIFAR-10, CelebA or any image folder into one uint8 array.

`load_dataset(name=..., root=...)` decodes the native files once, resizes them once and caches
the result on disk as a memory-mappable array (see `cache.py`), so a second run starts in about a
second and every process on a host shares one copy of the pixels. Readers register
themselves in `DATASETS` on import; `dataset_presence` says whether a dataset's files are there
(what `ganforge datasets` prints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ganforge.data import celeba as _celeba  # noqa: F401
from ganforge.data import cifar as _cifar  # noqa: F401
from ganforge.data import folder as _folder  # noqa: F401

# Importing a reader registers it.
from ganforge.data import idx as _idx  # noqa: F401  (mnist, fashion-mnist)
from ganforge.data import mnist5k as _mnist5k  # noqa: F401
from ganforge.data.base import DATASETS, DatasetSpec, ImageData, default_cache_dir, register_dataset
from ganforge.data.presence import Presence, dataset_presence
from ganforge.data.sources import LOCATORS, existing
from ganforge.errors import ConfigError, DataError

__all__ = ["DATASETS", "DatasetSpec", "ImageData", "default_cache_dir", "register_dataset",
           "load_dataset", "dataset_fingerprint", "dataset_reference_key", "dataset_digest", "check_data_dir", "reads",
           "Presence", "dataset_presence"]


def load_dataset(*, name: str, root: Union[str, Path, None] = None, split: str = "train", size: int = 0,
                 limit: int = 0, cache: bool = True, dist=None) -> ImageData:
    """Decoded images [N, C, H, W] uint8 on the CPU, with labels when the dataset has them.

    size:  0 keeps the dataset's native size (64 for celeba and folder); else resize once.
    limit: >0 keeps only the first `limit` images (in file order).
    cache: reuse / store the decoded array under `default_cache_dir()/arrays` (skipped, with one
           warning, when that folder cannot be written). From the cache, the images are a tensor over
           the memory-mapped file (`ImageData.mapped`).
    dist:  a `runtime.Dist` under torchrun: one process per host decodes, the others wait and map its
           file (see `cache.Planned.load`).
    """
    return _plan(name=name, root=root, split=split, size=size, limit=limit).load(cache=cache, dist=dist)


def dataset_fingerprint(*, name: str, root: Union[str, Path, None] = None, split: str = "train", size: int = 0,
                        limit: int = 0) -> str:
    """The key of what `load_dataset` with these arguments returns (its `fingerprint`), from the files'
    paths, sizes and times alone: nothing is decoded."""
    return _plan(name=name, root=root, split=split, size=size, limit=limit).key


def dataset_reference_key(*, name: str, root: Union[str, Path, None] = None, split: str = "train", size: int = 0,
                          limit: int = 0) -> str:
    """What the reference-statistics cache keys this data by (`ImageData.reference_key`): the files'
    content with the size, crop and limit, not their place or time; nothing is decoded."""
    return _plan(name=name, root=root, split=split, size=size, limit=limit).reference_key()


def dataset_digest(*, name: str, root: Union[str, Path, None] = None, split: str = "train", size: int = 0) -> str:
    """A digest of the content of the files `load_dataset` would read (not their place or time), so
    two folders can be told to hold the same data or not without decoding either."""
    return _plan(name=name, root=root, split=split, size=size, limit=0).content_digest()


def _plan(*, name: str, root, split: str, size: int, limit: int):
    spec = DATASETS.get(name)
    if split not in spec.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; choose one of: {', '.join(spec.splits)}")
    if size < 0 or limit < 0:
        raise ConfigError(f"size and limit must be >= 0 (got size={size}, limit={limit})")
    path = existing(Path(root).expanduser()) if root not in (None, "") else None
    return spec.plan(root=path, split=split, size=int(size), limit=int(limit))


def reads(name: str, root: Union[str, Path]) -> bool:
    """Whether dataset `name` finds its files in `root` itself (or below it), not in another place it looks."""
    locate = LOCATORS.get(name)
    if locate is None:
        return True
    path = Path(root).expanduser()
    try:
        found = locate(path).found
        if found is None:
            return False
        base, hit = path.resolve(), found.resolve()
    except (OSError, RuntimeError):  # unreadable, or a symlink loop
        return False
    return hit == base or base in hit.parents


def check_data_dir(name: str, root: Union[str, Path, None]) -> None:
    """A one-line DataError when a data directory was given that dataset `name` would not read (it would
    otherwise fall back to its packaged or cached copy, or fail late): it names the datasets that do read
    the folder and the presets that use them. Call it before any work starts."""
    if root in (None, ""):
        return
    path = existing(Path(root).expanduser())
    if reads(name, path):
        return
    others = [d for d in DATASETS if d != name and reads(d, path)]
    hint = "no dataset reads it" if not others else f"it holds {' / '.join(others)} data"
    presets = _presets_for(others)
    if presets:
        hint += f", read by the preset(s) {', '.join(presets)}"
    archives = sorted(q.name for q in path.glob("*.tar*")) + sorted(q.name for q in path.glob("*.tgz")) \
        if path.is_dir() else []
    if archives:  # a folder of archives is not a data set yet
        hint += f"; unpack one of {', '.join(archives)} first and pass the folder it makes"
    spec, note = DATASETS.get(name), LOCATORS[name](path).note if name in LOCATORS else ""
    wants = f" ({note})" if note else f" (it looks for {', '.join(spec.expected_files)})" if spec.expected_files else ""
    raise DataError(f"data directory {root}: dataset {name!r} does not read it{wants}; {hint}")


def _presets_for(datasets: list[str]) -> list[str]:
    if not datasets:
        return []
    import ganforge.presets  # noqa: F401  (fills PRESETS)
    from ganforge.config import PRESETS

    return [n for n, p in PRESETS.items() if p.build().data.name in datasets]
