"""Batches as index slices of a device-resident uint8 tensor (no DataLoader, no per-sample Python).

Each epoch's order is a permutation drawn from a generator seeded by (seed, epoch), so a resumed
run only needs the epoch and the position inside it to continue on exactly the same batches.
Under torchrun every rank takes its own stride of the same permutation.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch


class DeviceBatches:
    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], *, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, hflip: bool = False):
        if len(images) < batch_size * world_size:
            from ganforge.errors import ConfigError

            raise ConfigError(
                f"train.batch_size={batch_size} x {world_size} rank(s) is more than the {len(images)} images "
                "in the dataset; lower the batch size or use more data"
            )
        self.images = images.to(device, non_blocking=True)   # uint8 [N, C, H, W]
        self.labels = labels.to(device) if labels is not None else None
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size, self.hflip = rank, world_size, hflip
        # Drop the ragged tail so every step (and every rank) sees a full batch.
        self.steps_per_epoch = len(images) // (batch_size * world_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.images), generator=g)
        return perm[self.rank :: self.world_size].to(self.device)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Yield (images float [B, C, H, W] in [-1, 1], labels or None) from batch `start` of `epoch`."""
        perm = self.permutation(epoch)
        for i in range(start, self.steps_per_epoch):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.scale(self.images[idx]), (self.labels[idx] if self.labels is not None else None)

    def scale(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().mul_(2.0 / 255.0).sub_(1.0)
        if self.hflip:
            flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        return x
