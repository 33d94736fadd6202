"""An exponential moving average of the generator's weights, with its horizon given in images.

Karras et al. 2020 (StyleGAN2-ADA, training_loop.py's `ema_kimg`): the average forgets half of
its past every `half_life` real images, whatever the batch size or the number of D steps per G
step, so one setting carries over between machines. Early in training the half-life is at most
`rampup` times the images seen so far, so the average is not dragged back to the random start.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def ema_beta(images_per_update: float, half_life_images: float, *, images_seen: float = float("inf"),
             rampup: float = 0.0) -> float:
    """Decay for one update that covers `images_per_update` real images."""
    half = half_life_images
    if rampup > 0:
        half = min(half, images_seen * rampup)
    return 0.5 ** (images_per_update / max(half, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (batch-norm statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def follow(ema: Optional[nn.Module], model: nn.Module, *, images: int, images_seen: int, half_life_kimg: float,
           rampup: float) -> None:
    """One EMA update after a G step that covered `images` real images (nothing without an EMA)."""
    if ema is not None:
        beta = ema_beta(images, half_life_kimg * 1000, images_seen=images_seen + images, rampup=rampup)
        update_ema(ema, model, beta)
