"""`folder`: any tree of png/jpg/jpeg/webp/bmp images, or a zip of one, as a dataset.

Labels come from the first-level subfolder names when every image lies in one (`root/cat/1.jpg`,
`root/dog/2.png`); otherwise the images are unlabelled. Each image is converted to RGB (grey,
palette and alpha images included), centre-cropped to a square on its shorter side and resized
to `size` (64 by default). `plan_tree` is also how the CIFAR-10 tree and CelebA are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganforge.data.base import ImageData, register_dataset
from ganforge.data.cache import Planned, plan
from ganforge.data.images import IMAGE_EXTS, Crop, ImageTree, centre_square, decode_tree, has_images, list_tree
from ganforge.data.sources import Location, register_locator
from ganforge.errors import DataError

DEFAULT_SIZE = 64


def plan_tree(tree: ImageTree, *, name: str, split: str, size: int, limit: int, crop: Crop = centre_square,
              crop_id: str = "centre-square", labelled: bool = True,
              class_names: Optional[tuple[str, ...]] = None) -> Planned:
    """The planned decode of the first `limit` images of a tree at `size` x `size`.

    class_names: a fixed class list (e.g. CIFAR-10's, in its official order); subfolder names
    must then be among them. None: the sorted subfolder names are the classes.
    """
    tree = tree.head(limit)  # the first files in sorted order: `limit` takes the same images every time
    found = tree.labels() if labelled else None
    labels, classes = (None, ()) if found is None else found
    if found is not None and class_names is not None:
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise DataError(f"{tree.origin}: unexpected class folder(s) {', '.join(unknown)} for {name} "
                            f"(expected {', '.join(class_names)})")
        remap = np.array([class_names.index(c) for c in classes], dtype=np.int64)
        labels, classes = remap[labels], class_names

    def decode(alloc=None) -> ImageData:
        # draft (reduced-scale JPEG decoding) only for the centre square, which is defined as a share
        # of the image and so does not care at what scale the JPEG was decoded
        images, keep = decode_tree(tree, size=size, crop=crop, desc=f"{name}/{split}", draft=crop is centre_square,
                                   alloc=alloc)
        return ImageData(images=torch.from_numpy(images),
                         labels=None if labels is None else torch.from_numpy(labels[keep]),
                         class_names=classes, source=str(tree.origin))

    # The tree's fingerprint already covers every file (path, size, mtime), so it is the source.
    return plan(name=name, split=split, sources=[], extra=tree.fingerprint, size=size, crop=crop_id,
                limit=limit, decode=decode, into_file=True)


@register_locator("folder")
def locate(root: Optional[Path]) -> Location:
    if root is None:
        return Location((), None, "needs --data-dir: a folder of images or a zip of one")
    if has_images(root):
        return Location((root,), root)
    return Location((root,), None, f"no images ({', '.join(IMAGE_EXTS)}) in it or below")


@register_dataset("folder", channels=3, native_size=DEFAULT_SIZE, num_classes=0,
                  description="any folder (or zip) of png/jpg/webp/bmp images; subfolders = classes",
                  splits=("train",), expected_files=())
def plan_folder(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    if root is None:
        raise DataError("dataset 'folder' needs a data directory: --data-dir DIR (a folder of images or a zip)")
    return plan_tree(list_tree(root), name="folder", split=split, size=size or DEFAULT_SIZE, limit=limit)
