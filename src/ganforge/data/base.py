"""The in-memory dataset every reader returns, and the dataset registry.

A reader decodes its native files once into one uint8 array [N, C, H, W]; the cache keeps it as a
file that is memory-mapped, and training either copies it onto the device or gathers each batch
from the mapping (see `ganforge.data.batches`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from ganforge.registry import Registry

if TYPE_CHECKING:
    from ganforge.data.cache import Planned


@dataclass
class ImageData:
    images: torch.Tensor                  # uint8 [N, C, H, W], values 0..255
    labels: Optional[torch.Tensor]        # int64 [N] in 0..num_classes-1, or None
    class_names: tuple[str, ...] = ()     # empty when unlabelled
    source: str = ""                      # where the pixels came from, for logs and records
    fingerprint: str = ""                 # key of the decoded array (files' paths and times, size, crop, limit)
    mapped: bool = False                  # images is a view of the memory-mapped cache file (shared, not private)
    # computes the key of what the files hold (data/cache.py), asked for by an evaluation only
    key_of_content: Optional[Callable[[], str]] = field(default=None, repr=False, compare=False)
    _reference_key: str = field(default="", repr=False, compare=False)

    @property
    def reference_key(self) -> str:
        """The reference statistics' cache key ("" when unknown), computed once on first use."""
        if not self._reference_key and self.key_of_content is not None:
            self._reference_key = self.key_of_content()
        return self._reference_key

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to read it and what to tell the user about it."""

    name: str
    plan: Callable[..., Planned]        # plan(*, root: Path | None, split, size, limit) -> Planned (cache.py)
    channels: int
    native_size: int
    num_classes: int
    description: str
    splits: tuple[str, ...] = ("train", "test")
    expected_files: tuple[str, ...] = field(default=())  # what `ganforge datasets` looks for


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, **spec) -> Callable[[Callable[..., Planned]], Callable[..., Planned]]:
    """Decorator: `@register_dataset("mnist", channels=1, native_size=28, num_classes=10, description=...)`
    on a function that locates the files and returns what it would decode (a `cache.Planned`)."""

    def add(plan: Callable[..., Planned]) -> Callable[..., Planned]:
        DATASETS.register(name)(DatasetSpec(name=name, plan=plan, **spec))
        return plan

    return add


def default_cache_dir() -> Path:
    """Downloads and decoded-array caches live here: `$GANFORGE_CACHE` or `~/.cache/ganforge`."""
    import os

    return Path(os.environ.get("GANFORGE_CACHE") or Path.home() / ".cache" / "ganforge")
