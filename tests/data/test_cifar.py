"""CIFAR-10: python batches and image trees written here, hostile pickles, the real JPEG copy."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from ganforge.data import load_dataset
from ganforge.data.cache import cached_files
from ganforge.data.cifar import CLASSES
from ganforge.errors import DataError

SHARED = SHARED_DATA


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):  # never the user's cache
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_batches(d: Path, per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The original layout: 5 train batches, a test batch, batches.meta; bytes keys as in the originals."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_x, all_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": x,
                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            all_x.append(x)
            all_y += y
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2))
    return np.concatenate(all_x).reshape(-1, 3, 32, 32), np.array(all_y)


def test_python_batches(tmp_path, cache_dir):
    x, y = write_batches(tmp_path / "cifar-10-batches-py")
    d = load_dataset(name="cifar10", root=tmp_path)
    assert d.images.shape == (15, 3, 32, 32) and torch.equal(d.images, torch.from_numpy(x))
    assert d.labels.tolist() == y.tolist() and d.class_names == CLASSES
    t = load_dataset(name="cifar10", root=tmp_path / "cifar-10-batches-py", split="test", size=16)
    assert t.images.shape == (3, 3, 16, 16)
    assert len(cached_files()) == 2


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case, pattern", [
    ("evil", r"data_batch_1: not a CIFAR-10 python batch \(UnpicklingError: refusing to load posix.system\)"),
    ("truncated", r"data_batch_1: not a CIFAR-10 python batch"),
    ("labels", r"data_batch_1: 2 labels but 3 images"),
    ("missing", r"data_batch_5: no such file or directory"),
])
def test_bad_batches(tmp_path, cache_dir, case, pattern):
    d = tmp_path / "cifar-10-batches-py"
    write_batches(d)
    f = d / "data_batch_1"
    if case == "evil":
        f.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    elif case == "truncated":
        f.write_bytes(f.read_bytes()[:500])
    elif case == "labels":
        b = pickle.loads(f.read_bytes())
        b[b"labels"] = b[b"labels"][:2]
        f.write_bytes(pickle.dumps(b, protocol=2))
    else:
        (d / "data_batch_5").unlink()
    with pytest.raises(DataError, match=pattern) as e:
        load_dataset(name="cifar10", root=tmp_path)
    assert "\n" not in str(e.value) and cached_files() == []


def test_image_tree_uses_official_label_order(tmp_path):
    for cls, colour in (("truck", (0, 0, 255)), ("airplane", (255, 0, 0)), ("cat", (0, 255, 0))):
        for i in range(2):
            p = tmp_path / "train" / cls / f"{i:04d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), colour).save(p)
    d = load_dataset(name="cifar10", root=tmp_path)
    assert d.images.shape == (6, 3, 32, 32) and d.class_names == CLASSES
    assert d.labels.tolist() == [0, 0, 3, 3, 9, 9]
    assert d.images[0, :, 0, 0].tolist() == [255, 0, 0]
    with pytest.raises(DataError, match=r"test: no such folder"):
        load_dataset(name="cifar10", root=tmp_path, split="test")
    (tmp_path / "train" / "unicorn").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "unicorn" / "0.png")
    with pytest.raises(DataError, match=r"unexpected class folder\(s\) unicorn for cifar10"):
        load_dataset(name="cifar10", root=tmp_path)


def test_no_cifar_here(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 here: expected cifar-10-batches-py/data_batch_1..5"):
        load_dataset(name="cifar10", root=tmp_path)


def test_offline_download_message(monkeypatch, cache_dir):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "CIFAR10", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DataError, match=r"could not download cifar10 \(OSError: no network\); put the unpacked "
                                        r"cifar-10-batches-py folder .* in " + str(cache_dir)):
        load_dataset(name="cifar10")


@pytest.fixture(scope="module")
def real_cifar(tmp_path_factory):
    tar = SHARED / "cifar10-jpg.tar.gz"
    if not tar.is_file():
        pytest.skip(f"real data not found: {tar}")
    out = tmp_path_factory.mktemp("cifar")
    if shutil.which("tar"):  # GNU tar is several times faster than tarfile on 60,000 members
        subprocess.run(["tar", "-xzf", str(tar), "-C", str(out), "--wildcards", "*/train/*"], check=True)
    else:
        with tarfile.open(tar) as tf:
            tf.extractall(out, members=[m for m in tf if "/train/" in m.name], filter="data")
    return out / "cifar10-jpg"


@pytest.mark.slow
def test_real_cifar10_jpg(real_cifar):
    d = load_dataset(name="cifar10", root=real_cifar)
    assert d.images.shape == (50000, 3, 32, 32)
    assert torch.bincount(d.labels).tolist() == [5000] * 10
    x = d.images[:1000].float()
    assert 80 < x.mean() < 160 and x.std() > 40
