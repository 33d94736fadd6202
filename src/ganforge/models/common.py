"""Pieces shared by the architectures: DCGAN weight initialisation and class conditioning.

Conditioning follows Mirza & Osindero 2014 ("Conditional GANs": a label embedding joined to the
input) and, for convolutional discriminators, Miyato & Koyama 2018 ("cGANs with Projection
Discriminator": logit += <embed(y), phi(x)>) or label maps joined to D's first feature maps, the
conditioning of Bie et al.'s private DCGAN ("Private GANs, Revisited", TMLR 2023).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge.errors import ConfigError


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016: weights ~ N(0, 0.02); batch-norm scales ~ N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            # PyTorch's default (Kaiming uniform) trains these GANs too, but slower and less alike
            # between seeds; the paper's 0.02 is what the presets' learning rates were tuned with.
            nn.init.normal_(m.weight, 0.0, 0.02)
            bias = getattr(m, "bias", None)  # Embedding has none; the others may be built with bias=False
            if bias is not None:
                nn.init.zeros_(bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def conv_stages(size: int, *, arch: str) -> tuple[int, int]:
    """Split `size` into a start resolution (4 or 7) and a number of 2x stages: 28 = 7*2^2, 64 = 4*2^4."""
    # 7 for MNIST's 28 pixels, 4 for the powers of two; 4 first, so 56 = 7*8 but 64 = 4*16, never 7*9.1
    for start in (4, 7):
        stages = math.log2(size / start) if size >= start else -1.0
        if stages >= 1 and stages.is_integer():
            return start, int(stages)
    raise ConfigError(
        f"model.arch={arch} cannot make {size}x{size} images; sizes it can make: 28, 32, 56, 64, 128 "
        "(4 or 7 times a power of two); set data.size to one of them"
    )


class LatentWithLabel(nn.Module):
    """Joins a learned label embedding to the latent vector: [B, z] -> [B, z + embed_dim]."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.extra = embed_dim if num_classes else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return z
        if labels is None:
            raise ValueError("this generator is conditional: pass labels")
        # a learned embedding rather than a one-hot: it works for any number of classes at one width
        return torch.cat([z, self.embed(labels)], dim=1)  # [B, z + embed_dim]


def label_parameters(D: nn.Module) -> list[nn.Parameter]:
    """D's parameters that serve the label alone: a class head, a projection's class embedding, label maps
    (the modules marked `label_pathway` below). `optim.lr_d_label` and `privacy.label_clip` treat them apart."""
    return [q for m in D.modules() if getattr(m, "label_pathway", False) for q in m.parameters()]


class Projection(nn.Module):
    """Projection-discriminator term <embed(y), features> added to the unconditional logit."""

    label_pathway = True  # its weights serve the label alone: privacy.label_clip clips them apart

    def __init__(self, num_classes: int, features: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, logit: torch.Tensor, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return logit
        if labels is None:
            raise ValueError("this discriminator is conditional: pass labels")
        # <embed(y), phi(x)>: [B, F] * [B, F] summed to [B]. An inner product, not a label joined to
        # the input, so D judges "is this a real y" without first having to learn what y means.
        return logit + (self.embed(labels) * features).sum(dim=1)


class LabelMaps(nn.Module):
    """A learned map per class, joined to D's first feature maps: [B, C, H, W] -> [B, C + maps, H, W].

    Bie et al. 2023 condition their private D this way (a convolution of one-hot label planes,
    which away from the border is a constant per class and channel, as here). Every later weight
    of D then sees the label in every image of the batch; a projection's class embedding learns
    only from the images of its own class, a tenth of each MNIST batch, against the full noise
    DP-SGD adds to every coordinate.
    """

    label_pathway = True  # its weights serve the label alone: privacy.label_clip clips them apart

    def __init__(self, num_classes: int, maps: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, maps)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("this discriminator is conditional: pass labels")
        b, _, height, width = h.shape
        maps = self.embed(labels)[:, :, None, None].expand(b, -1, height, width)  # [B, maps, H, W]
        return torch.cat([h, maps.to(h.dtype)], dim=1)


class ClassHead(nn.Module):
    """An auxiliary classifier on D's last feature maps (AC-GAN, Odena et al. 2017): [B, ch, s, s] -> [B, K].

    A signal per image where a projection's class embedding learns per class: each real image's
    cross-entropy on its own label trains it, and G is rewarded when its image shows the asked-for
    class. A linear layer on the features averaged over positions: ch x K weights (650 for the
    private presets' D) where one kernel over the whole 7x7 map would take 49 times as many, and
    under DP-SGD every coordinate gets the same noise whatever its share of the signal.
    """

    label_pathway = True  # its weights serve the label alone: privacy.label_clip clips them apart

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h.mean(dim=(2, 3)))  # [B, ch] -> [B, K]


class MinibatchStd(nn.Module):
    """One more feature map: how much the samples of a group differ (Karras et al. 2018, "Progressive
    Growing of GANs", section 3). A batch of near-identical fakes then looks unlike a real batch, so
    D can punish the generator for covering too few modes. [B, C, H, W] -> [B, C + 1, H, W].

    Groups of `group` samples (the largest divisor of the batch that is at most `group`); each
    group's standard deviation of every feature, averaged into one number, fills its extra map.
    """

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = max(k for k in range(1, min(self.group, b) + 1) if b % k == 0)
        # In float32 even under bf16 autocast: the differences of near-identical samples, the very
        # thing this layer measures, are below bf16's 8-bit mantissa.
        y = x.float().view(g, b // g, *x.shape[1:])  # [G, M, C, H, W]: sample i of group m is m + i*M
        # + 1e-8 inside the root: the gradient of sqrt at 0 is infinite, and identical samples give 0
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [M]
        y = y.repeat(g).view(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)
