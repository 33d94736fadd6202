"""GAN objectives as pure functions of discriminator logits.

- `bce`: the non-saturating loss of Goodfellow et al. 2014 (G maximises log D(G(z))), with
  one-sided label smoothing (Salimans et al. 2016) and optional label flipping;
- `minimax`: the original saturating generator loss, log(1 - D(G(z))) minimised;
- `hinge`: Lim & Ye 2017 / Miyato et al. 2018;
- `lsgan`: Mao et al. 2017, least squares with targets 0 and 1;
- `wgan-gp`: Gulrajani et al. 2017, Wasserstein critic with a gradient penalty of weight 10;
- `rpgan`: the relativistic pairing loss (Jolicoeur-Martineau 2019; Huang et al. 2025, "The GAN is
  dead; long live the GAN!", eq. 2): D and G compare each real logit with a generated one,
  f(D(fake) - D(real)) with f = softplus. With the zero-centred penalties R1 and R2 below it is
  the R3GAN objective, which Huang et al. show converges locally where the plain loss may not.

Every generator loss takes the real logits too (`g_loss(fake, real)`); only relativistic ones read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ganforge import precision
from ganforge.config import LossConfig
from ganforge.registry import Registry


@dataclass(frozen=True)
class GANLoss:
    d_loss: Callable[..., torch.Tensor]     # d_loss(real_logits, fake_logits, cfg) -> scalar
    g_loss: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # g_loss(fake_logits, real_logits)
    gradient_penalty: bool = False          # needs WGAN-GP's penalty on interpolates
    probabilities: bool = False             # sigmoid(logit) is D's probability that an image is real
    relativistic: bool = False              # g_loss reads the real logits (the trainer computes them)


LOSSES: Registry[GANLoss] = Registry("loss")


def _targets(real: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Real/fake targets for D: smoothed real labels, and a random fraction swapped when flipping."""
    t_real = torch.full_like(real, 1.0 - cfg.label_smoothing)
    t_fake = torch.zeros_like(real)
    if cfg.label_flip > 0:
        flip = torch.rand_like(real) < cfg.label_flip
        t_real, t_fake = torch.where(flip, t_fake, t_real), torch.where(flip, t_real, t_fake)
    return t_real, t_fake


def bce_d_loss(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    t_real, t_fake = _targets(real, cfg)
    return F.binary_cross_entropy_with_logits(real, t_real) + F.binary_cross_entropy_with_logits(fake, t_fake)


LOSSES.register("bce")(GANLoss(bce_d_loss, lambda fake, real=None: F.softplus(-fake).mean(), probabilities=True))
# log(1 - sigmoid(x)) = -softplus(x): G minimises it directly (saturates when D wins).
LOSSES.register("minimax")(GANLoss(bce_d_loss, lambda fake, real=None: -F.softplus(fake).mean(),
                                   probabilities=True))
LOSSES.register("hinge")(GANLoss(
    lambda real, fake, cfg: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
    lambda fake, real=None: -fake.mean(),
))
LOSSES.register("lsgan")(GANLoss(
    lambda real, fake, cfg: 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean()),
    lambda fake, real=None: 0.5 * (fake - 1).pow(2).mean(),
))
LOSSES.register("wgan-gp")(GANLoss(
    lambda real, fake, cfg: fake.mean() - real.mean(),
    lambda fake, real=None: -fake.mean(),
    gradient_penalty=True,
))
def _rpgan_g_loss(fake: torch.Tensor, real: Optional[torch.Tensor]) -> torch.Tensor:
    # relativistic=True: the trainer computes the real logits for this loss and always passes them.
    assert real is not None, "rpgan's generator loss needs the real logits"
    return F.softplus(real - fake).mean()


# Pairs are formed in batch order: the i-th generated image against the i-th real one.
LOSSES.register("rpgan")(GANLoss(
    lambda real, fake, cfg: F.softplus(fake - real).mean(),
    _rpgan_g_loss,
    relativistic=True,
))


def penalises_gradients(cfg: LossConfig) -> bool:
    """Whether D's input gradients are penalised per sample (WGAN-GP, R1, R2): batch norm in D, which
    mixes the samples of a batch, cannot be used with them."""
    return LOSSES.get(cfg.name).gradient_penalty or cfg.r1_gamma > 0 or cfg.r2_gamma > 0


def zero_centred_penalty(outputs: torch.Tensor, inputs: torch.Tensor,
                         scaler: Optional[torch.amp.GradScaler] = None) -> torch.Tensor:
    """E[||grad_x D(x)||^2] over the batch: R1 when `inputs` are real, R2 when generated.

    `inputs` must require grad and `outputs` be D's logits for them; the graph is kept so the
    penalty can be minimised. The loss adds gamma / 2 times this (Mescheder et al. 2018, eq. 9).
    Under fp16 the gradient is taken of the scaled output (so it does not underflow) and unscaled
    before it is squared (`ganforge.precision`).
    """
    (grad,) = torch.autograd.grad(precision.scale(outputs.float().sum(), scaler), inputs, create_graph=True)
    return precision.unscale(grad, scaler).float().flatten(1).pow(2).sum(dim=1).mean()


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     labels: torch.Tensor | None = None, *, alpha: torch.Tensor | None = None,
                     scaler: Optional[torch.amp.GradScaler] = None) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat on random lines between real and fake samples."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = critic(x_hat, labels)
    (grad,) = torch.autograd.grad(precision.scale(out.float().sum(), scaler), x_hat, create_graph=True)
    return (precision.unscale(grad, scaler).float().flatten(1).norm(2, dim=1) - 1).pow(2).mean()
