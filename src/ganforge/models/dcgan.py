"""DCGAN (Radford et al. 2016): a transposed-convolution generator with batch norm and ReLU, and a
strided-convolution discriminator with batch norm and LeakyReLU(0.2), for 28, 32 or 64 pixels.

At 64x64 with 64 base channels this is the classic workload: G 100->512->256->128->64->C with
4x4 transposed convolutions, D its mirror.

`model.d_norm` picks D's normalisation: `batch` (the paper), `layer` or `none`. A WGAN-GP critic
must not use batch norm: the gradient penalty is taken per sample, and batch norm makes each
output depend on the whole batch (Gulrajani et al. 2017, section 4, recommend layer norm).

`model.d_condition` picks how a conditional D sees the label: `projection` (Miyato & Koyama 2018,
the default), `input`, a learned map per class joined to the first layer's output (half of its
channels), as in Bie et al.'s private DCGAN (2023), or `classifier`, an unconditional logit beside an
auxiliary classifier head (AC-GAN, Odena et al. 2017; its loss in training/objective.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.models import register_model
from ganforge.models.common import (
    ClassHead,
    LabelMaps,
    LatentWithLabel,
    MinibatchStd,
    Projection,
    conv_stages,
    dcgan_init,
)


class DCGANGenerator(nn.Module):
    def __init__(self, *, z_dim: int, channels: int, size: int, width: int, num_classes: int = 0):
        super().__init__()
        start, stages = conv_stages(size, arch="dcgan")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.cond = LatentWithLabel(num_classes, z_dim)
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            # [B, z, 1, 1] -> [B, ch, start, start]
            nn.ConvTranspose2d(z_dim + self.cond.extra, ch, start, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(stages - 1):  # each doubles the side and halves the channels
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        # tanh: images in [-1, 1], the range the data is scaled to (and no batch norm on the output,
        # as the paper prescribes)
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]  # [B, C, size, size]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.cond(z, labels)  # [B, z (+ embed)]
        # the latent as a 1x1 map: the first transposed convolution is then the paper's projection
        return self.net(h[:, :, None, None])


D_NORMS = ("batch", "layer", "none")
D_CONDITIONS = ("projection", "input", "classifier")


def _d_norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "layer":  # over (C, H, W) of each sample, with a per-channel scale and shift
        return nn.GroupNorm(1, ch)
    return nn.Identity()


class DCGANDiscriminator(nn.Module):
    conditions = D_CONDITIONS  # the values of model.d_condition it takes

    def __init__(self, *, channels: int, size: int, width: int, num_classes: int = 0, dropout: float = 0.0,
                 norm: str = "batch", mbstd: int = 0, condition: str = "projection"):
        super().__init__()
        if norm not in D_NORMS:
            raise ConfigError(f"model.d_norm={norm!r}: choose one of: {', '.join(D_NORMS)}")
        if condition not in D_CONDITIONS:
            raise ConfigError(f"model.d_condition={condition!r}: choose one of: {', '.join(D_CONDITIONS)}")
        start, stages = conv_stages(size, arch="dcgan")
        # label maps take half of the first layer's channels; the image the other half
        maps = width // 2 if num_classes and condition == "input" else 0
        # No normalisation on the first layer (Radford et al. 2016, section 3): normalising the input
        # layer made their models oscillate. [B, C, size, size] -> [B, w, size/2, size/2]
        layers: list[nn.Module] = [nn.Conv2d(channels, width - maps, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for _ in range(stages - 1):  # [B, ch, s, s] -> [B, 2ch, s/2, s/2]
            # a bias only without a normalisation: batch and layer norm subtract the mean, cancelling it
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"), _d_norm(norm, ch * 2),
                       nn.LeakyReLU(0.2, True)]
            if dropout:
                layers.append(nn.Dropout2d(dropout))
            ch *= 2
        self.features = nn.Sequential(*layers)  # -> [B, ch, start, start]
        self.mbstd = MinibatchStd(mbstd) if mbstd else None  # -> [B, ch + 1, start, start]
        self.head = nn.Conv2d(ch + (1 if mbstd else 0), 1, start, 1, 0)  # -> [B, 1, 1, 1]
        self.label_maps = LabelMaps(num_classes, maps) if maps else None  # after features[1]: -> [B, w, ...]
        classify = bool(num_classes) and condition == "classifier"
        self.classes = ClassHead(ch, num_classes) if classify else None  # -> [B, K]
        self.project = Projection(0 if maps or classify else num_classes, ch)
        dcgan_init(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                with_classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One logit per image, [B]; with `with_classes` also the class head's logits, [B, K]."""
        if self.label_maps is None:
            h = self.features(x)
        else:  # the label joins after the first convolution and its LeakyReLU
            h = self.features[2:](self.label_maps(self.features[:2](x), labels))
        logit = self.head(self.mbstd(h) if self.mbstd else h).flatten()  # [B]
        # the projection's phi(x): D's last map summed over its positions, [B, ch] (the global sum
        # pooling of Miyato & Koyama's discriminator)
        logit = self.project(logit, h.sum(dim=(2, 3)), labels)
        if not with_classes:
            return logit
        if self.classes is None:
            raise ValueError("this discriminator has no class head (model.d_condition=classifier)")
        return logit, self.classes(h)


@register_model("dcgan")
def build_dcgan(cfg: ModelConfig, *, channels: int, size: int, num_classes: int):
    g = DCGANGenerator(z_dim=cfg.z_dim, channels=channels, size=size, width=cfg.g_channels, num_classes=num_classes)
    d = DCGANDiscriminator(channels=channels, size=size, width=cfg.d_channels, num_classes=num_classes,
                           dropout=cfg.dropout, norm=cfg.d_norm, mbstd=cfg.d_mbstd, condition=cfg.d_condition)
    return g, d
