"""The baseline: the training loop most GAN tutorials (and the founding documents) write.

A torchvision-style dataset returns one PIL image at a time through per-sample `transforms`
(Resize, ToTensor, Normalize), a `DataLoader` shuffles and collates, the discriminator ends in a
Sigmoid followed by `BCELoss`, Adam runs its default per-parameter loop, and losses are read back
with `.item()` every step. The networks are the very same modules ganforge trains, so the two
loops do identical arithmetic per image and only the loop around them differs.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset


class ArrayImageDataset(VisionDataset):
    """What `torchvision.datasets.MNIST.__getitem__` does: uint8 array -> PIL image -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, transform):
        super().__init__(root="", transform=transform)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        pil = Image.fromarray(img[0], mode="L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0))
        return self.transform(pil), int(self.labels[i])


def textbook_loader(images: torch.Tensor, *, size: int, batch_size: int, workers: int) -> DataLoader:
    channels = images.shape[1]
    tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                             transforms.Normalize([0.5] * channels, [0.5] * channels)])
    labels = np.zeros(len(images), dtype=np.int64)
    ds = ArrayImageDataset(images.numpy(), labels, transform=tf)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


class TextbookLoop:
    """pytorch/examples' dcgan step: BCE on sigmoid outputs, Adam 2e-4 (0.5, 0.999), D on real then on
    fake, G through the same fake batch, and the per-step `.item()` of every tutorial's print."""

    def __init__(self, G: nn.Module, D: nn.Module, loader: DataLoader, *, z_dim: int,
                 device: torch.device = torch.device("cpu")):
        self.G, self.D, self.loader, self.z_dim, self.device = G, D, loader, z_dim, device
        self.criterion = nn.BCELoss()
        self.opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self._it = iter(loader)

    def _next(self) -> torch.Tensor:
        try:
            real, _ = next(self._it)
        except StopIteration:  # an epoch ended: reshuffle, as a `for epoch` loop around the loader does
            self._it = iter(self.loader)
            real, _ = next(self._it)
        return real

    def step(self) -> int:
        """One D and one G step; the images it used."""
        real = self._next().to(self.device)
        b, dev = real.size(0), self.device
        ones, zeros = torch.full((b,), 1.0, device=dev), torch.full((b,), 0.0, device=dev)
        self.D.zero_grad()
        err_real = self.criterion(torch.sigmoid(self.D(real)), ones)
        err_real.backward()
        fake = self.G(torch.randn(b, self.z_dim, device=dev))
        err_fake = self.criterion(torch.sigmoid(self.D(fake.detach())), zeros)
        err_fake.backward()
        self.opt_d.step()
        self.G.zero_grad()
        err_g = self.criterion(torch.sigmoid(self.D(fake)), ones)
        err_g.backward()
        self.opt_g.step()
        _ = (err_real + err_fake).item(), err_g.item()  # the per-step print of every tutorial
        return b


def textbook_images_per_s(G: nn.Module, D: nn.Module, loader: DataLoader, *, z_dim: int, warmup: int,
                          windows: int, window_steps: int, device: torch.device = torch.device("cpu")) -> list[float]:
    """Images/s of each timed window of the textbook loop (after `warmup` steps).

    On a GPU it does what pytorch/examples' dcgan does: CPU workers decode and collate, each batch
    is copied to the device, and the per-step `.item()` waits for the GPU.
    """
    loop, rates = TextbookLoop(G, D, loader, z_dim=z_dim, device=device), []
    for w in range(-1, windows):
        steps = warmup if w < 0 else window_steps
        start, seen = time.perf_counter(), 0
        for _ in range(steps):
            seen += loop.step()
        if w >= 0:
            rates.append(seen / (time.perf_counter() - start))
    return rates
