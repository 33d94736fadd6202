"""Fully connected GANs, as in the founding documents on MNIST (any size and channel count).

- `mlp`: model 1 of "GANs for handwritten digits". G: z (100) -> 256 -> 512 -> 1024 -> C*H*W with ReLU and Tanh;
  D: C*H*W -> 1024 -> 512 -> 256 -> 1 with LeakyReLU(0.2) (Goodfellow et al. 2014's setting).
- `mlp-bn`: model 2 of "GANs for handwritten digits": the same G with batch norm and
  LeakyReLU(0.2); D with LeakyReLU and dropout (as in "Realistic Image Generation with GANs").
- `mlp-bn-relu`: the generator of "Realistic Image Generation with GANs": fully connected layers
  with batch norm and ReLU.

Widths scale with the config: G's hidden layers are 4, 8 and 16 times `model.g_channels`, D's
16, 8 and 4 times `model.d_channels`, so the default 64 gives exactly the documents' 256/512/1024.
D's dropout is `model.dropout` (0 turns it off). Conditional variants follow Mirza & Osindero
2014: a label embedding is joined to G's latent vector and to D's flattened input.
The documents' D ends in a sigmoid; ours returns the logit and the loss applies the sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge.config import ModelConfig
from ganforge.models import register_model
from ganforge.models.common import LatentWithLabel

D_LABEL_DIM = 50  # width of the label embedding joined to D's input (a one-hot would need 10)


class MLPGenerator(nn.Module):
    """[B, z] (+ label) -> 4w -> 8w -> 16w -> [B, C, size, size] in [-1, 1]."""

    def __init__(self, *, z_dim: int, channels: int, size: int, width: int, num_classes: int = 0,
                 batch_norm: bool = False, leaky: bool = False):
        super().__init__()
        self.shape = (channels, size, size)
        self.cond = LatentWithLabel(num_classes, z_dim)
        layers: list[nn.Module] = []
        fan_in = z_dim + self.cond.extra
        for h in (4 * width, 8 * width, 16 * width):
            # A bias before batch norm is cancelled by its mean subtraction.
            layers.append(nn.Linear(fan_in, h, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True))
            fan_in = h
        layers += [nn.Linear(fan_in, channels * size * size), nn.Tanh()]  # [B, C*H*W]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.cond(z, labels)).view(-1, *self.shape)


class FCDiscriminator(nn.Module):
    """[B, C, H, W] (+ label) -> flatten -> 16w -> 8w -> 4w -> one logit per image, [B].

    Also the discriminator of `upsample` (the three-data-set GAN study's MNIST model: "fully connected
    layers with dropout").
    """

    def __init__(self, *, channels: int, size: int, width: int, num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        self.cond = LatentWithLabel(num_classes, D_LABEL_DIM)
        layers: list[nn.Module] = []
        fan_in = channels * size * size + self.cond.extra
        for h in (16 * width, 8 * width, 4 * width):
            # LeakyReLU in D (as in Radford et al.): a unit with a negative input still passes some
            # gradient back to G, where a ReLU would pass none
            layers += [nn.Linear(fan_in, h), nn.LeakyReLU(0.2, inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            fan_in = h
        layers.append(nn.Linear(fan_in, 1))  # a logit, not a sigmoid: the losses take logits (stable BCE)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # flatten(1) reads in logical NCHW order whatever the memory format (channels_last included).
        return self.net(self.cond(x.flatten(1), labels)).squeeze(1)


def fc_discriminator(cfg: ModelConfig, *, channels: int, size: int, num_classes: int) -> FCDiscriminator:
    return FCDiscriminator(channels=channels, size=size, width=cfg.d_channels, num_classes=num_classes,
                           dropout=cfg.dropout)


def _mlp_builder(*, batch_norm: bool, leaky: bool):
    def build(cfg: ModelConfig, *, channels: int, size: int, num_classes: int):
        g = MLPGenerator(z_dim=cfg.z_dim, channels=channels, size=size, width=cfg.g_channels,
                         num_classes=num_classes, batch_norm=batch_norm, leaky=leaky)
        return g, fc_discriminator(cfg, channels=channels, size=size, num_classes=num_classes)

    return build


register_model("mlp")(_mlp_builder(batch_norm=False, leaky=False))
register_model("mlp-bn")(_mlp_builder(batch_norm=True, leaky=True))
register_model("mlp-bn-relu")(_mlp_builder(batch_norm=True, leaky=False))
