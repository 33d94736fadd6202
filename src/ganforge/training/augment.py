"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transformations are applied to every image the discriminator sees,
real and generated, in D's step and in G's step, so D cannot tell the two apart by the augmentation
and G still gets gradients through it. With few training images (the demo has 5,000) this keeps D
from memorising the data set. Each operation draws its own parameters per image from the global
torch RNG (which checkpoints save), works on [B, C, H, W] images in [-1, 1], and keeps that range.

- `color`: random brightness (±0.5), saturation (x0..2) and contrast (x0.5..1.5), clamped to [-1, 1];
- `translation`: shifts by up to 1/8 of the side, filling with 0 (mid grey);
- `cutout`: blanks (to 0) a square of half the side at a random place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch

from ganforge.errors import ConfigError
from ganforge.registry import Registry

Op = Callable[[torch.Tensor], torch.Tensor]
AUGMENTS: Registry[Op] = Registry("augmentation")


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One value per image, broadcastable over [C, H, W]."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


@AUGMENTS.register("color")
def color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(x, 0.5, 1.5) + mean
    return x.clamp(-1.0, 1.0)


def _grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[2:]
    return (torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w))


def _randint(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """One integer in [low, high] per image, shaped [B, 1, 1]."""
    return torch.randint(low, high + 1, (x.shape[0], 1, 1), device=x.device)


@AUGMENTS.register("translation")
def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ys, xs = _grid(x)
    # Source pixel of every output pixel in a copy padded by (sy, sx) on each side: [B, H, W].
    src_y = (ys + _randint(x, -sy, sy) + sy).expand(b, h, w)
    src_x = (xs + _randint(x, -sx, sx) + sx).expand(b, h, w)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))
    batch = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
    return padded.permute(0, 2, 3, 1)[batch, src_y, src_x].permute(0, 3, 1, 2)  # [B, C, H, W]


@AUGMENTS.register("cutout")
def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    h, w = x.shape[2:]
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ys, xs = _grid(x)
    top, left = _randint(x, -(ch // 2), h - ch // 2 - 1), _randint(x, -(cw // 2), w - cw // 2 - 1)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # [B, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


def parse_policy(policy: str) -> list[Op]:
    """`"translation,cutout,color"` -> the operations in that order; "" -> none. Unknown names: ConfigError."""
    names = [n.strip() for n in policy.split(",") if n.strip()]
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise ConfigError(f"data.augment={policy!r}: unknown {', '.join(unknown)}; choose from "
                          f"{', '.join(AUGMENTS.names())} (comma-separated), or leave it empty")
    return [AUGMENTS.get(n) for n in names]


class DiffAugment:
    """Callable applying a policy's operations in order; the identity for an empty policy.

    With `p` (a 0-d tensor, set by adaptive augmentation) each operation is applied to each image with
    that probability instead of always. The operation is computed for the whole batch either way, so
    the random draws, and with them exact resume, do not depend on p."""

    def __init__(self, policy: str, p: Optional[torch.Tensor] = None):
        self.policy = policy
        self.ops = parse_policy(policy)
        self.p = p

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            if self.p is None:
                x = op(x)
            else:
                keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p  # [B, 1, 1, 1]
                x = torch.where(keep, x, op(x))
        return x
