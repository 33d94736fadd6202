"""`ganforge sample`: N images of a trained generator as a folder of PNGs or one `.npz`.

The folder holds one subfolder per class and a `labels.csv` (path, label, class) for a conditional
model, so it loads as a labelled image folder elsewhere; the `.npz` holds `images` (uint8, N x C x
H x W) and, for a conditional model, `labels` (int64) and `class_names`. Both are written while
generating, CHUNK images at a time, so memory stays flat for any N. Images of a private run's generator
come with its guarantee (training/privacy.py): a `privacy.json` in the folder, a `privacy` entry (JSON
text) in the `.npz`.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ganforge.outputs.files import atomic_output
from ganforge.outputs.model import Model, batches, check_class, check_count, check_seed, check_truncation
from ganforge.training.ledger import summary

# A folder name on every file system: no separators, no leading dot or dash, nothing a shell quotes
# ("T-shirt/top", a Fashion-MNIST class, would be a path); otherwise the class indices are used.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def class_folders(model: Model) -> list[str]:
    """Subfolder names: the class names when they are all usable as folder names, else 0, 1, 2, ..."""
    names = [model.class_name(k) for k in range(model.num_classes)]
    if all(_SAFE.match(n) for n in names) and len(set(names)) == len(names):
        return names
    width = len(str(model.num_classes - 1))  # zero-padded, so the folders sort in class order
    return [f"{k:0{width}d}" for k in range(model.num_classes)]


def to_pil(image: np.ndarray) -> Image.Image:
    """One uint8 image [C, H, W] -> a grey or RGB PIL image."""
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def _bar(n: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=n, unit="img", desc="sampling", disable=not (show and sys.stderr.isatty() and n > 1000))


def write_pngs(model: Model, n: int, tmp: Path, *, seed: int, k: Optional[int], truncation: Optional[float],
               show_progress: bool = True) -> None:
    # Names zero-padded to one width: a file manager and `ls` sort them in generation order, and
    # image i of a seed has the same name whatever --n was.
    width = max(6, len(str(n - 1)))
    folders = class_folders(model) if model.conditional else []
    for name in folders if k is None else folders[k:k + 1]:
        (tmp / name).mkdir()
    rows = []
    with _bar(n, show_progress) as bar:
        for start, images, labels in batches(model, n, seed=seed, k=k, truncation=truncation):
            for j, image in enumerate(images.numpy()):
                i = start + j
                rel = f"{i:0{width}d}.png"
                if labels is not None:
                    label = int(labels[j])
                    rel = f"{folders[label]}/{rel}"
                    rows.append((rel, label, model.class_name(label)))
                # level 4: within a few percent of level 9's size at a fraction of its time
                to_pil(image).save(tmp / rel, compress_level=4)
            bar.update(len(images))
    if model.conditional:
        with open(tmp / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "class"])
            writer.writerows(rows)


def _stream_array(zf: zipfile.ZipFile, name: str, dtype: np.typing.DTypeLike, shape: tuple[int, ...]):
    """An .npy member of the archive, its header written, ready for the raw bytes: np.savez would
    need the whole array in memory, and a million 64x64 RGB images are 12 GB."""
    # force_zip64: the size is not known when the member is opened, and it may pass 4 GiB
    f = zf.open(name + ".npy", "w", force_zip64=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def write_npz(model: Model, n: int, tmp: Path, *, seed: int, k: Optional[int], truncation: Optional[float],
              show_progress: bool = True) -> None:
    labels_all = np.zeros(n, dtype=np.int64)
    # ZIP_STORED, as np.savez does: np.load can then map or read the members without inflating them
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        f = _stream_array(zf, "images", np.uint8, (n, model.channels, model.size, model.size))
        with f, _bar(n, show_progress) as bar:
            for start, images, labels in batches(model, n, seed=seed, k=k, truncation=truncation):
                f.write(np.ascontiguousarray(images.numpy()).tobytes())
                if labels is not None:
                    labels_all[start:start + len(images)] = labels.numpy()
                bar.update(len(images))
        if model.conditional:
            with _stream_array(zf, "labels", np.int64, (n,)) as f:
                f.write(labels_all.tobytes())
            names = np.array([model.class_name(i) for i in range(model.num_classes)])
            with _stream_array(zf, "class_names", names.dtype, names.shape) as f:
                f.write(names.tobytes())


def sample(model: Model, *, n: int, out: Path, seed: int = 0, k: Optional[int] = None, fmt: str = "png",
           truncation: Optional[float] = None, overwrite: bool = False, show_progress: bool = True) -> Path:
    """Write n images of `seed` to `out` (a folder for png, a file for npz); every check runs before writing."""
    check_count(n)
    check_seed(seed)
    check_class(model, k)
    check_truncation(truncation)
    per_image = model.channels * model.size * model.size
    need = n * (per_image + (300 if fmt == "png" else 8))  # PNG: rough upper bound plus file-system overhead
    folder = fmt == "png"
    with atomic_output(Path(out), folder=folder, overwrite=overwrite, need_bytes=need) as tmp:
        (write_pngs if folder else write_npz)(model, n, tmp, seed=seed, k=k, truncation=truncation,
                                              show_progress=show_progress)
        private = summary(model.run_dir)
        if private and folder:
            (tmp / "privacy.json").write_text(json.dumps(private, indent=1))
        elif private:
            text = np.array(json.dumps(private))
            with zipfile.ZipFile(tmp, "a") as zf, _stream_array(zf, "privacy", text.dtype, text.shape) as f:
                f.write(text.tobytes())
    return Path(out)
