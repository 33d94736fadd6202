"""Resize a whole uint8 image array once, at load time, with an antialiased bilinear filter."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Images resized per chunk, so a 50,000-image array never needs a full float copy in memory.
_CHUNK = 2048


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size]; `size=0` or the same size returns it as is.

    Antialiasing matters when shrinking (e.g. CIFAR-10 to 16 px): plain bilinear would alias.
    """
    if size <= 0 or (images.shape[-2] == size and images.shape[-1] == size):
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], _CHUNK):
        x = images[i:i + _CHUNK].float()
        # align_corners=False with antialias: PIL's bilinear resize, the one the image-tree readers
        # use, so MNIST at 32 px and a folder of digits at 32 px go through the same filter
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        # rounded to the nearest level, then clamped against float round-off at 0 and 255 before the cast
        out[i:i + _CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
