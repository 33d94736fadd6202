"""`upsample`: the MNIST GAN of the three-data-set GAN study (MNIST, CelebA, CIFAR-10). G grows a
small map by upsampling followed by a convolution, with batch norm and LeakyReLU(0.2); D is fully
connected with dropout (see `mlp.FCDiscriminator`).

Upsampling (nearest or bilinear, `model.upsample`) then a 3x3 convolution, rather than a strided
transposed convolution, avoids the checkerboard artefacts of uneven kernel overlap (Odena et al.
2016, "Deconvolution and Checkerboard Artifacts"). The channel plan mirrors `dcgan`: the map starts
at 4x4 or 7x7 with `g_channels * 2^(stages-1)` channels and halves its channels at each doubling,
so it makes 28, 32, 56, 64 or 128 pixels. Convolutions are initialised as in Radford et al. 2016.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.models import register_model
from ganforge.models.common import LatentWithLabel, conv_stages, dcgan_init
from ganforge.models.mlp import fc_discriminator

MODES = ("nearest", "bilinear")


class UpsampleGenerator(nn.Module):
    def __init__(self, *, z_dim: int, channels: int, size: int, width: int, num_classes: int = 0,
                 mode: str = "nearest"):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"model.upsample={mode!r}: choose one of: {', '.join(MODES)}")
        start, stages = conv_stages(size, arch="upsample")
        self.start = start
        self.cond = LatentWithLabel(num_classes, z_dim)
        self.ch = ch = width * 2 ** (stages - 1)
        # [B, z (+ embed)] -> [B, ch * start * start], reshaped to [B, ch, start, start] in forward
        # no bias: the batch norm right after it subtracts the mean
        self.project = nn.Linear(z_dim + self.cond.extra, ch * start * start, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(ch), nn.LeakyReLU(0.2, inplace=True)]
        # Bilinear needs align_corners stated; False matches how image libraries resize.
        up: dict[str, Any] = dict(scale_factor=2, mode=mode) | ({"align_corners": False} if mode == "bilinear" else {})
        for _ in range(stages - 1):  # [B, ch, s, s] -> [B, ch/2, 2s, 2s]
            layers += [nn.Upsample(**up), nn.Conv2d(ch, ch // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(ch // 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch //= 2
        layers += [nn.Upsample(**up), nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh()]  # [B, C, size, size]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(self.cond(z, labels))
        return self.net(h.view(-1, self.ch, self.start, self.start))


@register_model("upsample")
def build_upsample(cfg: ModelConfig, *, channels: int, size: int, num_classes: int):
    g = UpsampleGenerator(z_dim=cfg.z_dim, channels=channels, size=size, width=cfg.g_channels,
                          num_classes=num_classes, mode=cfg.upsample)
    return g, fc_discriminator(cfg, channels=channels, size=size, num_classes=num_classes)
