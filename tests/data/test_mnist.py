"""MNIST, Fashion-MNIST and mnist-5k: IDX files written here, bad IDX input, the cache, real data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from ganforge.data import load_dataset
from ganforge.data.cache import cached_files
from ganforge.errors import ConfigError, DataError

SHARED = SHARED_DATA


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):  # never the user's cache
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(directory: Path, *, n: int = 12, split: str = "train", gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    directory.mkdir(parents=True, exist_ok=True)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz, cache_dir):
    images, labels = write_idx(tmp_path / "d", gz=gz)
    d = load_dataset(name="mnist", root=tmp_path / "d")
    assert d.images.shape == (12, 1, 28, 28) and d.images.dtype == torch.uint8
    assert torch.equal(d.images[:, 0], torch.from_numpy(images))
    assert d.labels.tolist() == labels.tolist() and d.labels.dtype == torch.int64
    assert d.num_classes == 10
    assert len(cached_files()) == 1
    again = load_dataset(name="mnist", root=tmp_path / "d")  # from the cache
    assert torch.equal(again.images, d.images) and torch.equal(again.labels, d.labels)


def test_torchvision_layout_resize_limit_and_test_split(tmp_path):
    write_idx(tmp_path / "FashionMNIST" / "raw", n=7, split="test")
    write_idx(tmp_path / "FashionMNIST" / "raw", n=9, split="train")
    d = load_dataset(name="fashion-mnist", root=tmp_path, split="test", size=16, limit=5)
    assert d.images.shape == (5, 1, 16, 16)
    assert d.class_names[0] == "T-shirt/top"


def test_resize_is_antialiased_mean_preserving(tmp_path):
    write_idx(tmp_path, n=4)
    full = load_dataset(name="mnist", root=tmp_path).images.float()
    small = load_dataset(name="mnist", root=tmp_path, size=14).images.float()
    # random noise averaged 2x2: mean kept, variance cut (plain bilinear would keep the noise)
    assert abs(full.mean() - small.mean()) < 2
    assert small.std() < 0.75 * full.std()


def test_split_and_name_errors(tmp_path):
    with pytest.raises(ConfigError, match="choose one of: train, test"):
        load_dataset(name="mnist", root=tmp_path, split="valid")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset(name="mnist-6k")
    with pytest.raises(ConfigError, match="choose one of: train$"):
        load_dataset(name="mnist-5k", split="test")


def corrupt(directory: Path, stem: str, fn) -> Path:
    p = directory / (stem + ".gz")
    raw = gzip.decompress(p.read_bytes())
    p.unlink()
    out = directory / stem
    out.write_bytes(fn(raw))
    return out


@pytest.mark.parametrize("case, pattern", [
    ("truncated", r"train-images-idx3-ubyte: truncated IDX file: header says 12x28x28"),
    ("magic", r"train-images-idx3-ubyte: wrong magic number 0x00000801, expected 0x00000803"),
    ("count", r"train-labels-idx1-ubyte: 11 labels but train-images-idx3-ubyte.gz has 12 images"),
    ("gzip", r"train-images-idx3-ubyte.gz: truncated gzip file"),
    ("missing", r"no mnist IDX files"),
    ("nonexistent", r"nope: no such file or directory"),
])
def test_bad_idx(tmp_path, cache_dir, case, pattern):
    d = tmp_path / "d"
    write_idx(d)
    root = d
    if case == "truncated":
        corrupt(d, "train-images-idx3-ubyte", lambda b: b[:-100])
    elif case == "magic":
        corrupt(d, "train-images-idx3-ubyte", lambda b: b[:3] + b"\x01" + b[4:])
    elif case == "count":
        corrupt(d, "train-labels-idx1-ubyte", lambda b: b[:4] + struct.pack(">I", 11) + b[8:-1])
    elif case == "gzip":
        p = d / "train-images-idx3-ubyte.gz"
        p.write_bytes(p.read_bytes()[:200])
    elif case == "missing":
        (d / "train-images-idx3-ubyte.gz").unlink()
    elif case == "nonexistent":
        root = tmp_path / "nope"
    with pytest.raises(DataError, match=pattern) as e:
        load_dataset(name="mnist", root=root)
    assert "\n" not in str(e.value)
    assert cached_files() == []


def test_offline_download_says_where_to_put_files(monkeypatch, cache_dir):
    import torchvision.datasets as tvd

    def refuse(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(tvd, "MNIST", refuse)
    with pytest.raises(DataError, match=r"could not download mnist .*put train-images-idx3-ubyte.gz, .* in "
                                        + str(cache_dir / "MNIST" / "raw")):
        load_dataset(name="mnist")
    assert cached_files() == []


def test_changed_source_is_a_new_cache_entry(tmp_path, cache_dir):
    write_idx(tmp_path, seed=1)
    a = load_dataset(name="mnist", root=tmp_path)
    write_idx(tmp_path, n=13, seed=2)
    b = load_dataset(name="mnist", root=tmp_path)
    assert len(a) == 12 and len(b) == 13 and len(cached_files()) == 2


def test_the_reference_key_follows_the_content_not_the_place_or_time(tmp_path):
    """A copy of the files elsewhere, newer, keeps the reference statistics' key (and so their cache);
    the array cache's fingerprint, which a stat alone gives, does not survive the copy."""
    import os
    import shutil

    from ganforge.data import dataset_fingerprint, dataset_reference_key

    write_idx(tmp_path / "a", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for f in (tmp_path / "b").iterdir():
        os.utime(f, ns=(10**18, 10**18))
    a, b = load_dataset(name="mnist", root=tmp_path / "a"), load_dataset(name="mnist", root=tmp_path / "b")
    assert a.reference_key == b.reference_key == dataset_reference_key(name="mnist", root=tmp_path / "a")
    assert a.fingerprint != b.fingerprint == dataset_fingerprint(name="mnist", root=tmp_path / "b")
    write_idx(tmp_path / "b", seed=2)  # the same names and sizes, other pixels
    assert dataset_reference_key(name="mnist", root=tmp_path / "b") != a.reference_key
    assert dataset_reference_key(name="mnist", root=tmp_path / "a", size=14) != a.reference_key
    assert dataset_reference_key(name="mnist", root=tmp_path / "a", limit=5) != a.reference_key


def test_loading_reads_no_file_for_the_reference_key_until_an_evaluation_asks(tmp_path, monkeypatch):
    """Training never evaluates against a reference in most runs: the digest of the files' contents is
    left to the first use of `reference_key`, and computed once."""
    import ganforge.data.cache as cache_mod

    write_idx(tmp_path, seed=1)
    calls = []
    real = cache_mod.content_digest
    monkeypatch.setattr(cache_mod, "content_digest", lambda *a: calls.append(a) or real(*a))
    data = load_dataset(name="mnist", root=tmp_path)
    assert calls == []
    key = data.reference_key
    assert key.startswith("content:") and len(calls) == 1
    assert data.reference_key == key and len(calls) == 1


def test_no_cache_writes_nothing(tmp_path, cache_dir):
    write_idx(tmp_path)
    load_dataset(name="mnist", root=tmp_path, cache=False)
    assert cached_files() == []


def test_damaged_cache_file_is_decoded_again(tmp_path, cache_dir):
    write_idx(tmp_path)
    a = load_dataset(name="mnist", root=tmp_path).images.clone()  # the mapping dies with the truncation
    (f,) = cached_files()
    images = f / "images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    b = load_dataset(name="mnist", root=tmp_path)
    assert torch.equal(a, b.images)


def test_mnist5k_packaged():
    d = load_dataset(name="mnist-5k")
    assert d.images.shape == (5000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.shape == (5000,) and set(d.labels.tolist()) == set(range(10))
    assert d.images.max() == 255 and d.images.min() == 0
    assert d.labels[:20].tolist() == list(range(10)) * 2  # interleaved: `limit` keeps classes balanced
    assert load_dataset(name="mnist-5k", limit=1000).labels.bincount().tolist() == [100] * 10


def test_mnist5k_from_csv_root_and_bad_csv(tmp_path):
    rows = np.zeros((3, 785), dtype=np.int64)
    rows[:, 0] = 255
    rows[:, 784] = [3, 1, 4]
    csv = tmp_path / "mnist_5k.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    d = load_dataset(name="mnist-5k", root=tmp_path, size=32)
    assert d.images.shape == (3, 1, 32, 32) and d.labels.tolist() == [1, 3, 4]
    csv.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataError, match=r"mnist_5k.csv.gz: expected rows of 784 pixels and a label"):
        load_dataset(name="mnist-5k", root=tmp_path, cache=False)


needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"real data not found at {SHARED}")


@needs_shared
def test_real_mnist():
    d = load_dataset(name="mnist", root=SHARED / "mnist")
    assert d.images.shape == (60000, 1, 28, 28)
    assert int((d.labels == 1).sum()) == 6742
    assert torch.bincount(d.labels).tolist()[0] == 5923
    t = load_dataset(name="mnist", root=SHARED, split="test")
    assert len(t) == 10000


@needs_shared
def test_real_fashion_mnist():
    d = load_dataset(name="fashion-mnist", root=SHARED / "fashion-mnist")
    assert d.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(d.labels).tolist() == [6000] * 10


def test_a_data_dir_the_dataset_does_not_read_is_one_line_naming_presets(tmp_path):
    """mnist-5k never falls back to its packaged copy when given a folder of IDX files."""
    from ganforge.data import check_data_dir

    write_idx(tmp_path / "mnist")
    with pytest.raises(DataError) as e:
        check_data_dir("mnist-5k", tmp_path / "mnist")
    message = str(e.value)
    assert "dataset 'mnist-5k' does not read it" in message and "mnist_5k.csv.gz" in message
    assert "mnist-dcgan" in message and "demo" not in message.split("preset(s)")[1] and "\n" not in message
    with pytest.raises(DataError, match="mnist-5k needs mnist_5k.csv.gz, not found at"):
        load_dataset(name="mnist-5k", root=tmp_path / "mnist")
    check_data_dir("mnist", tmp_path)            # reads root/mnist
    check_data_dir("mnist-5k", None)             # no data dir: the packaged copy
    with pytest.raises(DataError, match="it holds mnist data, read by the preset"):
        check_data_dir("cifar10", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset reads it"):
        check_data_dir("cifar10", tmp_path / "empty")
