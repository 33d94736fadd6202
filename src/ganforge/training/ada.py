"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data", the ADA heuristic r_t).

Each DiffAugment operation is applied to each image with probability p (the same p for real and
generated images, so D still cannot tell them apart by the augmentation). p starts at 0 and follows
how much D overfits, measured by r_t = E[sign(D(x_real))]: a D that has memorised its training images
calls nearly all of them real (r_t -> 1), one that generalises is unsure (r_t near 0). After every
log window p moves by sign(r_t - target) times the window's real images over `data.ada_kimg` thousand,
so p can go from 0 to 1 in ada_kimg kimg; Karras et al. use target 0.6.

Two choices differ from StyleGAN2-ADA and are deliberate:
- p is adjusted at the log window's end from the window's r_t, which the ranks have already averaged
  in the window's one all-reduce, so every rank holds the same p with no extra synchronisation, and
  the adjustment is the same whatever the number of ranks or steps per window (it scales with images);
- p is part of the checkpoint, so a resume continues from the p it had (StyleGAN2-ADA's resume
  restarts p at 0 unless told otherwise, and D, adapted to strong augmentation, is then suddenly
  shown clean images).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ganforge.config import DataConfig


class AdaptiveAugment:
    def __init__(self, cfg: DataConfig, *, device: torch.device):
        self.target, self.kimg = cfg.ada_target, cfg.ada_kimg
        # A 0-d tensor on the device: DiffAugment compares random draws with it without a host sync.
        self.p = torch.zeros((), device=device)
        # Real images seen at the last adjustment, from the checkpoint. Unknown (None) at a start, or at a
        # resume of a run that had no ADA: the first window then only sets it, so switching ADA on
        # mid-run cannot move p by all the images seen before.
        self._images: Optional[int] = None

    @staticmethod
    def enabled(cfg: DataConfig) -> bool:
        return cfg.ada_target > 0

    def update(self, r_t: Optional[float], *, images: int) -> float:
        """Move p after a log window whose mean sign(D(real)) was r_t; the new p (None r_t: unchanged)."""
        seen = 0 if self._images is None else images - self._images
        self._images = images
        if r_t is not None and math.isfinite(r_t) and seen > 0:
            step = math.copysign(seen / (self.kimg * 1000), r_t - self.target) if r_t != self.target else 0.0
            self.p.fill_(min(max(float(self.p) + step, 0.0), 1.0))
        return float(self.p)

    def state_dict(self) -> dict:
        return {"p": float(self.p), "images": self._images}

    def load_state_dict(self, state: dict) -> None:
        self.p.fill_(state["p"])
        self._images = state["images"]
