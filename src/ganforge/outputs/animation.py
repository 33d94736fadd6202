"""Image grids, labelled panels and GIF animations; `progress_gif` turns a run's per-epoch fixed-noise
grids (`samples/epoch_*.png`) into `samples/progress.gif`."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from ganforge import fsutil

MAX_FRAMES = 120     # a 500-epoch run still gives a GIF of a few MiB: frames are thinned evenly
FRAME_MS, LAST_MS = 400, 2000


def grid_image(images: torch.Tensor, *, nrow: int, padding: int = 2) -> Image.Image:
    """uint8 [B, C, H, W] -> one PIL grid, `nrow` images per row, black padding (as the training grids)."""
    g = make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=0)  # [C, H', W'] uint8
    arr = g.permute(1, 2, 0).numpy()  # PIL's [H, W, C]
    # make_grid repeats one channel three times; a grey grid is saved as grey, a third of the size
    return Image.fromarray(arr[:, :, 0] if images.shape[1] == 1 else arr)


def grid_size(n: int, *, nrow: int, size: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of `grid_image` for n images of size x size."""
    cols, rows = min(nrow, n), -(-n // nrow)
    return cols * (size + padding) + padding, rows * (size + padding) + padding


def with_caption(image: Image.Image, text: str, *, above: bool = False) -> Image.Image:
    """The image with a white strip holding `text` in the built-in bitmap font (no font files needed)."""
    font = ImageFont.load_default()
    box = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
    strip = int(box[3] - box[1]) + 8
    width = max(image.width, int(box[2] - box[0]) + 8)
    out = Image.new("RGB", (width, image.height + strip), "white")
    out.paste(image.convert("RGB"), (0, strip if above else 0))
    ImageDraw.Draw(out).text((4, (0 if above else image.height) + 3), text, fill="black", font=font)
    return out


def save_image_atomic(image: Image.Image, path: Path, **kwargs) -> Path:
    """Save beside `path` under a temporary name, then rename: a reader never sees half a file."""
    with fsutil.atomic_file(path) as tmp:
        image.save(tmp, **kwargs)
    return Path(path)


def _gif_options(frames: list[Image.Image], frame_ms: int, last_ms: int) -> dict[str, Any]:
    # the last frame held longer, so a viewer sees where training ended before the loop restarts;
    # loop=0 repeats for ever
    return dict(format="GIF", save_all=True, append_images=frames[1:],
                duration=[frame_ms] * (len(frames) - 1) + [last_ms], loop=0)


def save_gif(frames: Sequence[Image.Image], path: Path, *, frame_ms: int = FRAME_MS, last_ms: int = LAST_MS,
             atomic: bool = True) -> Path:
    """An animated GIF; `atomic=False` when `path` is already a temporary name of an atomic write."""
    frames = [f.convert("RGB") for f in frames]
    options = _gif_options(frames, frame_ms, last_ms)
    if not atomic:
        frames[0].save(path, **options)
        return path
    return save_image_atomic(frames[0], path, **options)


def thin(items: list, limit: int) -> list:
    """At most `limit` items spread evenly, always keeping the first and the last."""
    if len(items) <= limit:
        return items
    idx = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in idx]


def progress_frames(run_dir: Path) -> list[Image.Image]:
    """The run's epoch grids as captioned frames of one size (at most MAX_FRAMES); empty without grids."""
    grids = sorted((Path(run_dir) / "samples").glob("epoch_*.png"))
    frames = []
    for path in thin(grids, MAX_FRAMES):
        epoch = int(re.sub(r"\D", "", path.stem) or 0)
        with Image.open(path) as im:
            frames.append(with_caption(im.convert("RGB"), f"epoch {epoch}"))
    if not frames:
        return frames
    # one size for every frame (a GIF has one canvas): a caption longer than the grid widens its frame
    size = (max(f.width for f in frames), max(f.height for f in frames))
    return [f if f.size == size else f.resize(size) for f in frames]


def progress_gif(run_dir: Path) -> Path | None:
    """`samples/progress.gif` from the run's epoch grids, each frame captioned; None when there are none."""
    frames = progress_frames(run_dir)
    return save_gif(frames, Path(run_dir) / "samples" / "progress.gif") if frames else None


def gif_bytes(frames: Sequence[Image.Image]) -> bytes:
    """The animation save_gif writes, in memory: for a page that must not write into the run it shows."""
    buf = io.BytesIO()
    rgb = [f.convert("RGB") for f in frames]
    rgb[0].save(buf, **_gif_options(rgb, FRAME_MS, LAST_MS))
    return buf.getvalue()
