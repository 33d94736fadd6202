"""CelebA aligned faces (`img_align_celeba/` or `img_align_celeba.zip`), cropped and resized to 64x64.

Crop: the centre 108x108 square of the 178x218 aligned image (box left=35, top=55, right=143,
bottom=163), the crop of the original DCGAN code and most GAN papers' 64x64 CelebA; then an
antialiased bilinear resize to `size` (64 by default). Images of another size get the centre
min(108, width, height) square. All images form the one `train` split (GANs train on all of them).

With no root the images are looked for in the cache folder, then downloaded through torchvision;
that download is often refused by its host, and then the message says what to fetch by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PIL import Image

from ganforge.data.base import default_cache_dir, register_dataset
from ganforge.data.cache import Planned
from ganforge.data.folder import plan_tree
from ganforge.data.images import list_tree
from ganforge.data.sources import Location, first_with, register_locator
from ganforge.errors import DataError

CROP = 108
DEFAULT_SIZE = 64
FOLDER, ZIP = "img_align_celeba", "img_align_celeba.zip"
SITE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


def crop_108(im: Image.Image) -> Image.Image:
    # The centre 108 x 108 box of the 178 x 218 aligned faces, then resized to 64: the crop of the
    # common DCGAN CelebA setup, which keeps the face and drops most of the background.
    # In source pixels, so reduced-scale JPEG decoding (`draft`) must stay off for it.
    w, h = im.size
    s = min(CROP, w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def _candidates(root: Optional[Path]) -> list[Path]:
    base = [root] if root is not None else [default_cache_dir()]
    out = []
    for b in base:
        out += [b / FOLDER, b / ZIP, b / "celeba" / FOLDER, b / "celeba" / ZIP]
    if root is not None:
        out.append(root)  # the image folder (or zip) itself
    return out


def _holds_images(p: Path) -> bool:
    if p.is_file():
        return p.suffix.lower() == ".zip"
    return p.is_dir() and next((True for q in p.glob("*.jp*g")), False)


@register_locator("celeba")
def locate(root: Optional[Path]) -> Location:
    cands = _candidates(root)
    found = first_with(cands, _holds_images)
    note = "tries torchvision's download on first use" if root is None else ""
    return Location(tuple(cands), found, note)


def _download() -> Path:
    cache = default_cache_dir()
    try:
        import torchvision.datasets as tvd

        tvd.CelebA(root=str(cache), split="all", target_type=[], download=True)  # MD5-checked
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"could not download CelebA ({type(e).__name__}: {msg[:120]}); download {ZIP} by hand "
                        f"(Align&Cropped Images, from {SITE}) and put it in {cache / 'celeba'}, or pass "
                        f"--data-dir DIR holding {FOLDER}/ or {ZIP}") from None
    return cache / "celeba" / FOLDER


@register_dataset("celeba", channels=3, native_size=DEFAULT_SIZE, num_classes=0,
                  description="CelebA aligned faces, centre 108px crop resized to 64x64 (research use only)",
                  splits=("train",), expected_files=(FOLDER, ZIP))
def plan_celeba(*, root: Optional[Path], split: str, size: int, limit: int = 0) -> Planned:
    loc = locate(root)
    src = loc.found
    if src is None:
        if root is not None:
            raise DataError(f"{root}: no CelebA images: expected {FOLDER}/*.jpg or {ZIP} there or in {root / 'celeba'}")
        src = _download()
    return plan_tree(list_tree(src), name="celeba", split=split, size=size or DEFAULT_SIZE, limit=limit,
                     crop=crop_108, crop_id=f"centre-{CROP}", labelled=False)
