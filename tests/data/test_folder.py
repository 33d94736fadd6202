"""`folder` and `celeba`: image trees and zips written here, corrupt and missing input, real CelebA-6k."""

from __future__ import annotations

import io
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import SHARED_DATA
from ganforge.data import load_dataset
from ganforge.data.cache import cached_files
from ganforge.errors import DataError

SHARED = SHARED_DATA


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):  # never the user's cache
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def save(path: Path, im: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def solid(colour, size=(20, 20), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def make_tree(root: Path) -> None:
    save(root / "cats" / "a.png", solid((255, 0, 0)))
    save(root / "cats" / "b.jpg", solid((250, 0, 0), size=(40, 30)))     # not square: centre crop
    save(root / "dogs" / "c.png", solid(128, mode="L"))                  # grey -> RGB
    save(root / "dogs" / "sub" / "d.webp", solid((0, 0, 255)))           # deeper: still class "dogs"
    save(root / "dogs" / "e.bmp", solid((0, 255, 0, 128), mode="RGBA").convert("RGB"))
    save(root / "dogs" / "f.png", solid((0, 255, 0, 128), mode="RGBA"))  # alpha dropped
    (root / "dogs" / "notes.txt").write_text("not an image")


def test_labelled_tree(tmp_path, cache_dir):
    make_tree(tmp_path / "t")
    d = load_dataset(name="folder", root=tmp_path / "t", size=16)
    assert d.images.shape == (6, 3, 16, 16) and d.images.dtype == torch.uint8
    assert d.class_names == ("cats", "dogs") and d.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert d.images[0, :, 0, 0].tolist() == [255, 0, 0]
    assert d.images[2, :, 5, 5].tolist() == [128, 128, 128]
    assert d.images[3, :, 5, 5].tolist() == [0, 255, 0]  # dogs/e.bmp sorts before dogs/sub/d.webp
    assert len(cached_files()) == 1
    again = load_dataset(name="folder", root=tmp_path / "t", size=16)
    assert torch.equal(again.images, d.images) and torch.equal(again.labels, d.labels)


def test_big_jpeg_reduced_decode_matches_full_decode(tmp_path):
    """A 1024 px photo (decoded at reduced JPEG scale) gives nearly the same 32 px image as a PNG copy."""
    yy, xx = np.mgrid[0:768, 0:1024]
    rgb = np.stack([xx * 255 // 1023, yy * 255 // 767, (xx + yy) % 256 // 2], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    Image.open(tmp_path / "a.jpg").save(tmp_path / "b.png")
    d = load_dataset(name="folder", root=tmp_path, size=32).images.float()
    assert d.shape == (2, 3, 32, 32) and (d[0] - d[1]).abs().mean() < 2


def test_flat_folder_is_unlabelled_default_size_64(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", solid((i, i, i)))
    d = load_dataset(name="folder", root=tmp_path)
    assert d.images.shape == (3, 3, 64, 64) and d.labels is None and d.num_classes == 0


def test_zip_of_a_folder_matches_the_folder(tmp_path):
    make_tree(tmp_path / "t")
    z = tmp_path / "t.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted((tmp_path / "t").rglob("*")):
            zf.write(p, Path("t") / p.relative_to(tmp_path / "t"))
    a = load_dataset(name="folder", root=tmp_path / "t", size=8)
    b = load_dataset(name="folder", root=z, size=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert b.class_names == ("cats", "dogs")


def test_few_corrupt_images_are_skipped_and_reported(tmp_path, caplog, cache_dir):
    for i in range(9):
        save(tmp_path / ("a" if i < 5 else "b") / f"{i}.png", solid((i * 20, 0, 0)))
    good = io.BytesIO()
    solid((1, 2, 3), size=(64, 64)).save(good, "JPEG")
    (tmp_path / "b" / "7.jpg").write_bytes(good.getvalue()[:300])  # truncated JPEG
    with caplog.at_level(logging.WARNING, logger="ganforge.data"):
        d = load_dataset(name="folder", root=tmp_path, size=8)
    assert len(d) == 9 and d.labels.tolist() == [0] * 5 + [1] * 4
    assert "skipped 1 of 10 images" in caplog.text and "7.jpg" in caplog.text
    assert len(cached_files()) == 1


@pytest.mark.parametrize("case, pattern", [
    ("mostly-corrupt", r"3 of 4 images are unreadable or corrupt \(first: .*/x0.jpg: "),
    ("empty", r"empty: no images \(.png, .jpg, .jpeg, .webp, .bmp\) in this folder or below"),
    ("not-a-zip", r"fake.zip: not a zip file"),
    ("empty-zip", r"nothing.zip: no images"),
    ("nonexistent", r"missing: no such file or directory"),
])
def test_bad_folders(tmp_path, cache_dir, case, pattern):
    root = tmp_path / case
    if case == "mostly-corrupt":
        save(root / "ok.png", solid((1, 1, 1)))
        for i in range(3):
            (root / f"x{i}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    elif case == "empty":
        root = tmp_path / "empty"
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "readme.txt").write_text("no images")
    elif case == "not-a-zip":
        root = tmp_path / "fake.zip"
        root.write_bytes(b"this is not a zip file")
    elif case == "empty-zip":
        root = tmp_path / "nothing.zip"
        with zipfile.ZipFile(root, "w") as zf:
            zf.writestr("a.txt", "hi")
    elif case == "nonexistent":
        root = tmp_path / "missing"
    with pytest.raises(DataError, match=pattern) as e:
        load_dataset(name="folder", root=root)
    assert "\n" not in str(e.value)
    assert cached_files() == []
    assert not list(tmp_path.rglob("*.tmp"))


def test_folder_needs_a_root():
    with pytest.raises(DataError, match="needs a data directory"):
        load_dataset(name="folder")


def synthetic_face(i: int) -> Image.Image:
    """178x218 like img_align_celeba: white inside the 108px centre crop box, black outside."""
    im = Image.new("RGB", (178, 218), (0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.rectangle((35, 55, 142, 162), fill=(255, 255, 255))
    draw.ellipse((60, 80, 118, 140), fill=(200, 150 + i, 120))  # a "face"
    return im


def make_celeba(folder: Path, n: int = 5) -> None:
    for i in range(n):
        save(folder / f"{i + 1:06d}.jpg", synthetic_face(i))


@pytest.mark.parametrize("layout", ["parent", "itself", "zip", "torchvision"])
def test_celeba_layouts_and_crop(tmp_path, layout):
    if layout == "parent":
        make_celeba(tmp_path / "img_align_celeba")
        root = tmp_path
    elif layout == "itself":
        make_celeba(tmp_path / "img_align_celeba")
        root = tmp_path / "img_align_celeba"
    elif layout == "torchvision":
        make_celeba(tmp_path / "celeba" / "img_align_celeba")
        root = tmp_path
    else:
        make_celeba(tmp_path / "src" / "img_align_celeba")
        with zipfile.ZipFile(tmp_path / "img_align_celeba.zip", "w") as zf:
            for p in sorted((tmp_path / "src" / "img_align_celeba").iterdir()):
                zf.write(p, f"img_align_celeba/{p.name}")
        root = tmp_path
    d = load_dataset(name="celeba", root=root, limit=4)
    assert d.images.shape == (4, 3, 64, 64) and d.labels is None
    x = d.images.float()
    # the crop is exactly the white box: its border stays white, the face sits in the middle
    assert x[:, :, 0, :].mean() > 235 and x[:, :, -1, :].mean() > 235 and x[:, :, :, 0].mean() > 235
    assert x[:, 2, 32, 32].mean() < 150


def test_celeba_missing_and_download_refused(tmp_path, monkeypatch, cache_dir):
    with pytest.raises(DataError, match=r"no CelebA images: expected img_align_celeba/\*.jpg or img_align_celeba.zip"):
        load_dataset(name="celeba", root=tmp_path)
    import torchvision.datasets as tvd

    def refuse(*a, **k):
        raise RuntimeError("Too many users have viewed or downloaded this file recently.\nTry later")

    monkeypatch.setattr(tvd, "CelebA", refuse)
    with pytest.raises(DataError, match=r"could not download CelebA .*download img_align_celeba.zip by hand .*"
                                        r"put it in " + str(cache_dir / "celeba")) as e:
        load_dataset(name="celeba")
    assert "\n" not in str(e.value) and cached_files() == []


@pytest.fixture(scope="module")
def real_celeba(tmp_path_factory):
    tar = SHARED / "celeba-6k.tar.gz"
    if not tar.is_file():
        pytest.skip(f"real data not found: {tar}")
    out = tmp_path_factory.mktemp("celeba")
    n = 0
    with tarfile.open(tar) as tf:  # only the first few hundred faces: streaming, so this is quick
        for m in tf:
            if m.isfile() and m.name.endswith(".jpg"):
                tf.extract(m, out, filter="data")
                n += 1
                if n == 300:
                    break
    return out / "celeba-6k"


def test_real_celeba_6k(real_celeba):
    d = load_dataset(name="celeba", root=real_celeba, limit=200)
    assert d.images.shape == (200, 3, 64, 64) and d.images.dtype == torch.uint8
    x = d.images.float()
    assert 40 < x.mean() < 200 and x.std() > 30
    d32 = load_dataset(name="celeba", root=real_celeba / "img_align_celeba", limit=8, size=32)
    assert d32.images.shape == (8, 3, 32, 32)
    assert np.isclose(d32.images.float().mean(), d.images[:8].float().mean(), atol=3)


def test_presence_finds_celeba_and_folder_below_the_data_dir(tmp_path):
    from ganforge.data import dataset_presence

    make_celeba(tmp_path / "img_align_celeba", n=1)
    celeba = dataset_presence("celeba", tmp_path)
    assert celeba.present and celeba.path == tmp_path / "img_align_celeba" and celeba.where == "--data-dir"
    assert dataset_presence("folder", tmp_path).present and not dataset_presence("mnist", tmp_path).present


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A real 16-bit PNG (greyscale [H, W] or RGB [H, W, 3] uint16), chunk by chunk as the spec says:
    PIL cannot write 16-bit colour PNGs."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    """A mid-grey 16-bit PNG is mid-grey, not white."""
    grey = np.full((8, 8), 32896, dtype=np.uint16)          # 32896 / 257 = 128
    ramp = np.tile(np.arange(0, 65536, 8192, dtype=np.uint16), (8, 1))
    rgb = np.zeros((8, 8, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 0
    write_png16(tmp_path / "a_grey.png", grey)
    write_png16(tmp_path / "b_ramp.png", ramp)
    write_png16(tmp_path / "c_rgb.png", rgb)
    assert Image.open(tmp_path / "a_grey.png").mode.startswith("I")  # really 16-bit on disk
    d = load_dataset(name="folder", root=tmp_path, size=8).images
    assert d[0, :, 4, 4].tolist() == [128, 128, 128]
    assert d[1, 0, 0].tolist() == [round(v / 257) for v in range(0, 65536, 8192)]
    assert d[2, :, 4, 4].tolist() == [255, 128, 0]


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 is decoded upright, as viewers show it."""
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    ImageDraw.Draw(stored).rectangle((0, 0, 31, 31), fill=(255, 0, 0))   # red: the stored left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "plain.png")
    d = load_dataset(name="folder", root=tmp_path, size=32).images.int()
    photo, plain = d[0], d[1]
    # Displayed: 32 wide, 64 tall, red on top; the centre square crop keeps the middle rows.
    assert photo[0, 2, 16] > 200 and photo[2, 2, 16] < 60          # top: red
    assert photo[2, 29, 16] > 200 and photo[0, 29, 16] < 60        # bottom: blue
    assert plain[0, 16, 2] > 200 and plain[2, 16, 29] > 200        # the PNG without EXIF: left red, right blue


def test_broken_symlinks_and_loops_are_left_out_with_a_warning(tmp_path, caplog):
    """Broken links and link loops inside a folder data set: no traceback, no endless walk."""
    root = tmp_path / "data"
    save(root / "a" / "1.png", solid((10, 0, 0)))
    save(tmp_path / "elsewhere" / "2.png", solid((20, 0, 0)))
    (root / "b").symlink_to(tmp_path / "elsewhere")               # a linked folder is read
    (root / "broken.png").symlink_to(tmp_path / "gone.png")       # points at nothing
    (root / "x.png").symlink_to(root / "y.png")                   # x -> y -> x
    (root / "y.png").symlink_to(root / "x.png")
    (root / "a" / "up").symlink_to(root)                          # a folder loop
    with caplog.at_level(logging.WARNING, logger="ganforge.data"):
        d = load_dataset(name="folder", root=root, size=8)
    assert len(d) == 2 and d.images[:, 0, 0, 0].tolist() == [10, 20]
    assert "left out 4 broken or looping symbolic link(s)" in caplog.text


def test_only_images_make_a_folder_data_set(tmp_path):
    from ganforge.data import reads

    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    save(tmp_path / "pics" / "deep" / "1.png", solid((1, 2, 3)))
    assert not reads("folder", tmp_path / "idx") and reads("folder", tmp_path / "pics")
