"""ResNet generator and discriminator in the style of SNGAN (Miyato et al. 2018, appendix B; the
blocks of Gulrajani et al. 2017), for 28, 32 or 64 pixels and any channel count.

G: z -> linear -> [B, 4w.., s0, s0] -> one up-block per 2x stage -> BN, ReLU, 3x3 conv -> tanh.
   A block is BN-ReLU-up-conv3x3-BN-ReLU-conv3x3 plus an up-conv1x1 shortcut. A conditional G
   uses class-conditional batch norm (de Vries et al. 2017; Miyato & Koyama 2018): every batch
   norm's scale and shift come from the label.
D: an "optimised" first block (conv-act-conv-pool, shortcut pool-conv1x1), one down-block per
   remaining stage, one block at the last resolution, then act, global sum pooling, a linear logit
   and the projection term for conditional models. D has no normalisation: add `model.d_sn` for
   SNGAN, or R1/R2 penalties for R3GAN-style training; its activation is LeakyReLU(0.2).

Widths halve in G and double in D per stage from `model.g_channels` / `model.d_channels` at full
resolution, as in DCGAN: at 32 pixels with width 64, G runs 256 -> 128 -> 64 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import ModelConfig
from ganforge.models import register_model
from ganforge.models.common import MinibatchStd, Projection, conv_stages


class CondBatchNorm(nn.Module):
    """Batch norm whose scale and shift are per class when `num_classes` > 0, else learned constants."""

    def __init__(self, ch: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, affine=num_classes == 0)
        self.embed = nn.Embedding(num_classes, 2 * ch) if num_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # starts near plain batch norm: scale 1, shift 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if self.embed is None:
            return h
        if labels is None:
            raise ValueError("this generator is conditional: pass labels")
        gamma, beta = self.embed(labels)[:, :, None, None].chunk(2, dim=1)  # [B, ch, 1, 1] each
        # 1 + gamma: with the embedding drawn near 0 every class starts at scale 1, shift 0
        return h * (1 + gamma) + beta


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = CondBatchNorm(c_in, num_classes), CondBatchNorm(c_out, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # nearest-neighbour doubling (interpolate's default), as in SNGAN's blocks: no learned
        # upsampling, so no checkerboard from uneven kernel overlap
        h = F.interpolate(F.relu(self.bn1(x, labels)), scale_factor=2.0)  # [B, c_in, 2s, 2s]
        h = self.conv2(F.relu(self.bn2(self.conv1(h), labels)))           # [B, c_out, 2s, 2s]
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class ResNetGenerator(nn.Module):
    def __init__(self, *, z_dim: int, channels: int, size: int, width: int, num_classes: int = 0):
        super().__init__()
        self.start, stages = conv_stages(size, arch="resnet")
        self.z_dim, self.num_classes = z_dim, num_classes
        widths = [width * 2 ** max(stages - 1 - i, 0) for i in range(stages + 1)]  # 256, 128, 64, 64 at 32 px, w=64
        self.ch0 = widths[0]
        self.linear = nn.Linear(z_dim, self.ch0 * self.start * self.start)  # -> [B, ch0, s0, s0]
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], num_classes) for i in range(stages))
        self.bn = CondBatchNorm(widths[-1], num_classes)
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)  # -> [B, C, size, size]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(-1, self.ch0, self.start, self.start)  # [B, ch0, s0, s0]
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.out(F.relu(self.bn(h, labels))))


class DBlock(nn.Module):
    """act-conv3x3-act-conv3x3 (-avgpool) plus a shortcut; `first` omits the leading activation."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.leaky_relu(x, 0.2)
        h = self.conv2(F.leaky_relu(self.conv1(h), 0.2))
        skip = x
        if self.down:
            h = F.avg_pool2d(h, 2)
            # The first block pools before its 1x1 shortcut (cheaper, same function: both are linear).
            skip = F.avg_pool2d(x, 2)
        if self.skip is not None:
            skip = self.skip(skip)
        return h + skip


class ResNetDiscriminator(nn.Module):
    def __init__(self, *, channels: int, size: int, width: int, num_classes: int = 0, mbstd: int = 0):
        super().__init__()
        _, stages = conv_stages(size, arch="resnet")
        widths = [width * 2 ** i for i in range(stages)]  # e.g. 64, 128, 256 at 32 pixels, w=64
        blocks: list[nn.Module] = [DBlock(channels, widths[0], down=True, first=True)]
        blocks += [DBlock(widths[i - 1], widths[i], down=True) for i in range(1, stages)]
        if mbstd:  # [B, w, s0, s0] -> [B, w + 1, s0, s0] before the last block
            blocks.append(MinibatchStd(mbstd))
        blocks.append(DBlock(widths[-1] + (1 if mbstd else 0), widths[-1], down=False))
        self.blocks = nn.Sequential(*blocks)  # -> [B, w_last, s0, s0]
        self.linear = nn.Linear(widths[-1], 1)
        self.project = Projection(num_classes, widths[-1])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # global sum pooling (SNGAN's), which the projection term then reads too
        h = F.leaky_relu(self.blocks(x), 0.2).sum(dim=(2, 3))  # [B, w_last]
        return self.project(self.linear(h).flatten(), h, labels)


@register_model("resnet")
def build_resnet(cfg: ModelConfig, *, channels: int, size: int, num_classes: int):
    g = ResNetGenerator(z_dim=cfg.z_dim, channels=channels, size=size, width=cfg.g_channels, num_classes=num_classes)
    d = ResNetDiscriminator(channels=channels, size=size, width=cfg.d_channels, num_classes=num_classes,
                            mbstd=cfg.d_mbstd)
    return g, d
