"""One training step's objective: D's loss with its penalties, then G's loss (the loop only optimizes).

The loss itself is an entry of `ganforge.training.losses.LOSSES` (pure functions of logits); this object adds
what every loss shares, so that the trainer's step is a few lines (as stylegan2-ada keeps its
objective in training/loss.py):

- DiffAugment (Zhao et al. 2020) on every image D sees, real and generated, in both phases;
- the zero-centred penalties R1 on real and R2 on generated images (Mescheder et al. 2018; Roth et
  al. 2017), lazily every `loss.reg_every` steps and weighted by it (Karras et al. 2020), taken with
  respect to the images *before* augmentation;
- WGAN-GP's penalty on interpolates (Gulrajani et al. 2017);
- mixed precision (`ganforge.precision`): the forward passes under autocast, the penalties'
  inner gradients of the scaled output under fp16;
- torch.compile: the fast (compiled) modules for every pass except those a penalty differentiates
  twice, which need the eager D (compiled graphs have no double backward);
- an auxiliary classifier (AC-GAN, Odena et al. 2017) when D has a class head
  (`model.d_condition=classifier`): its cross-entropy on each real image's label joins D's loss
  (weighted by `loss.class_weight`), and on the asked-for label of each generated image G's
  (`loss.class_weight_g`). Two weights because under DP-SGD D's is also its share of each image's
  clipped gradient (docs/privacy.md), which G's loss, never clipped, does not need. D's head
  learns from real images only: trained on generated ones too, as in the original AC-GAN, it learns
  G's mistakes as classes and rewards G for images that are easy to classify rather than real
  (Gong et al. 2019, "Twin Auxiliary Classifiers GAN", section 3);
- the mode-seeking term (MSGAN, Mao et al. 2019) in G's loss when `loss.mode_seeking` > 0: for pairs
  of latents drawn with the same label, the inverse of how far G's images move per unit of latent
  distance, so that a G mapping every latent of a class to one image pays for it. It reads G alone:
  no real image, no D, and so no privacy spent under DP-SGD.

D(x) and D(G(z)) are reported as probabilities for the sigmoid losses and as raw critic values for
the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ganforge.config import LossConfig
from ganforge.precision import Precision
from ganforge.training.augment import DiffAugment
from ganforge.training.losses import LOSSES, gradient_penalty, zero_centred_penalty


@dataclass
class DiscriminatorStep:
    loss: torch.Tensor
    fake: torch.Tensor             # G(z), with its graph when G learns this step
    d_real: torch.Tensor           # D(x) as logged: a probability or a critic value, detached
    d_fake: torch.Tensor
    real_sign: torch.Tensor        # mean sign of D's raw outputs on the real batch: ADA's overfitting measure


class Objective:
    def __init__(self, cfg: LossConfig, *, z_dim: int, augment: DiffAugment, precision: Precision,
                 device: torch.device, G: nn.Module, D: nn.Module, g_fast: Optional[Callable] = None,
                 d_fast: Optional[Callable] = None):
        self.cfg, self.loss, self.z_dim = cfg, LOSSES.get(cfg.name), z_dim
        self.augment, self.precision, self.device = augment, precision, device
        self.G, self.D = G, D
        self.g_fast = g_fast if g_fast is not None else G
        self.d_fast = d_fast if d_fast is not None else D
        self.report = torch.sigmoid if self.loss.probabilities else (lambda v: v)  # D's outputs as logged
        self.classify = getattr(D, "classes", None) is not None  # an AC-GAN class head

    def judge(self, d: Callable, x: torch.Tensor, labels: Optional[torch.Tensor], *,
              weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits for `x` (augmented already), [B], and the class head's cross-entropy on `labels`
        times `weight` (0 without a class head), both in float32."""
        if not self.classify or labels is None:
            return d(x, labels).float(), torch.zeros((), device=x.device)
        logits, classes = d(x, labels, with_classes=True)
        return logits.float(), weight * F.cross_entropy(classes.float(), labels)

    def discriminator(self, x: torch.Tensor, labels: Optional[torch.Tensor], *, step: int, train_g: bool,
                      scaler: torch.amp.GradScaler) -> DiscriminatorStep:
        """D's loss on a real batch and a fresh generated one (drawn with the real batch's labels, so
        class-balanced like the data); `train_g` keeps G's graph for the generator phase."""
        c = self.cfg
        reg = step % c.reg_every == 0
        r1, r2 = reg and c.r1_gamma > 0, reg and c.r2_gamma > 0
        z = torch.randn(x.shape[0], self.z_dim, device=self.device)
        with self.precision.autocast(self.device):
            with torch.set_grad_enabled(train_g):  # no G graph when only D learns this step
                fake = self.g_fast(z, labels)
            real_in, fake_in = x.detach().requires_grad_(r1), fake.detach().requires_grad_(r2)
            d_real, class_loss = self.judge(self.D if r1 else self.d_fast, self.augment(real_in), labels,
                                            weight=c.class_weight)
            d_fake = (self.D if r2 else self.d_fast)(self.augment(fake_in), labels).float()
            loss = self.loss.d_loss(d_real, d_fake, c) + class_loss
        if r1:
            loss = loss + c.r1_gamma / 2 * c.reg_every * zero_centred_penalty(d_real, real_in, scaler)
        if r2:
            loss = loss + c.r2_gamma / 2 * c.reg_every * zero_centred_penalty(d_fake, fake_in, scaler)
        if self.loss.gradient_penalty:
            loss = loss + c.gp_weight * gradient_penalty(self.D, x, fake.detach().float(), labels, scaler=scaler)
        return DiscriminatorStep(loss, fake, self.report(d_real.detach()).mean(),
                                 self.report(d_fake.detach()).mean(), torch.sign(d_real.detach()).mean())

    def generator(self, x: torch.Tensor, labels: Optional[torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
        """G's loss for the images of this step's D phase, judged by the just-updated D. Call it with D's
        weights frozen: G needs D's input gradients only."""
        with self.precision.autocast(self.device):
            real_logits = None
            if self.loss.relativistic:  # the pairing compares with the updated D's real logits
                with torch.no_grad():
                    real_logits = self.d_fast(self.augment(x), labels).float()
            d_fake, class_loss = self.judge(self.d_fast, self.augment(fake), labels, weight=self.cfg.class_weight_g)
            loss = self.loss.g_loss(d_fake, real_logits) + class_loss
            if self.cfg.mode_seeking > 0:
                loss = loss + self.cfg.mode_seeking * self.mode_seeking(labels, len(fake))
            return loss

    def mode_seeking(self, labels: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """MSGAN's term for G: 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|) over pairs sharing a label.

        At most 64 pairs (half the batch when smaller), drawn fresh: the batch's own latents were not
        drawn in pairs, and 64 pairs measure the mean distance to a few percent for a sixth of a
        512-image batch's G pass. Mao et al.'s L1 distances and their 1e-5 against a zero ratio."""
        n = max(1, min(64, batch // 2))
        z = torch.randn(2 * n, self.z_dim, device=self.device)
        paired = None if labels is None else labels[:n].repeat(2)  # pair i is images i and n + i
        out = self.g_fast(z, paired).float()
        ratio = (out[:n] - out[n:]).abs().mean() / (z[:n] - z[n:]).abs().mean()
        return 1 / (ratio + 1e-5)
