"""Batches as index gathers of a uint8 array, on the device or in host memory (no DataLoader, no
per-sample Python).

Each epoch's order is a permutation drawn from a generator seeded by (seed, epoch), so a resumed
run only needs the epoch and the position inside it to continue on exactly the same batches.
Under torchrun every rank takes its own stride of the same permutation, and gathers only those
images: with the array memory-mapped (data/cache.py) a rank's private memory stays small.

Two placements give bit-identical batches:

- `device`: the whole uint8 set is copied onto the device once and batches are gathered there.
  The fastest; it needs the set to fit beside the model.
- `host`: the set stays in host memory (the memory-mapped cache file) and each batch is gathered
  by index on the host, into pinned memory when the device is CUDA, copied with non_blocking and
  prefetched one batch ahead by a background thread, so the device rarely waits. Any size that
  fits on the disk.

Both then scale the uint8 batch to [-1, 1] and draw the flips on the device in the main thread,
so the RNG stream (and so resume) is the same whichever placement is used. `choose_placement`
turns `data.placement` into one of the two; `auto` takes the device only when the set is at most
`data.device_share` of the device's memory, and always the host on a CPU, where a "copy onto the
device" would only duplicate the mapping in private memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from ganforge.errors import ConfigError

PLACEMENTS = ("auto", "device", "host")


def device_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of a CUDA device."""
    return torch.cuda.mem_get_info(device)


def choose_placement(setting: str, *, share: float, nbytes: int, device: torch.device) -> str:
    """`device` or `host` for `data.placement=setting`; ConfigError when a forced `device` cannot fit."""
    if setting not in PLACEMENTS:
        raise ConfigError(f"data.placement={setting!r}: choose one of {', '.join(PLACEMENTS)}")
    if device.type == "cpu":  # no separate memory to copy into: "device" slices the mapping in the loop
        return "host" if setting == "auto" else setting
    if device.type != "cuda":  # MPS reports no memory budget: `auto` keeps the copy it always made
        return "device" if setting == "auto" else setting
    if setting == "host":
        return "host"
    free, total = device_memory(device)
    if setting == "device":
        if nbytes > free:
            raise ConfigError(f"data.placement=device: the training set needs {_gb(nbytes)} on {device}, which has "
                              f"{_gb(free)} free of {_gb(total)}; set data.placement=host (or auto) to keep it in "
                              "host memory")
        return "device"
    # A share of the total, not of what is free now: the models and their activations are not
    # allocated yet, and a set that takes most of the device would leave them no room later.
    return "device" if nbytes <= share * total and nbytes <= free else "host"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def describe(images: torch.Tensor, *, placement: str, device: torch.device, mapped: bool) -> str:
    """The line printed at start: how big the set is and where its batches come from."""
    n, c, h, w = images.shape
    head = f"data: {n:,} images {h}x{w}x{c} ({_gb(images.nbytes)} uint8)"
    if placement == "host":
        where = "host memory (memory-mapped)" if mapped else "host memory"
        return f"{head} in {where}, batches gathered and prefetched"
    if device.type == "cpu":
        return f"{head} in host memory{' (memory-mapped)' if mapped else ''}, batches sliced in the training loop"
    return f"{head} copied onto {device}, batches sliced there"


class DeviceBatches:
    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], *, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, hflip: bool = False,
                 placement: str = "device"):
        if len(images) < batch_size * world_size:
            raise ConfigError(
                f"train.batch_size={batch_size} x {world_size} rank(s) is more than the {len(images)} images "
                "in the dataset; lower the batch size or use more data"
            )
        if placement not in ("device", "host"):
            raise ValueError(f"placement must be device or host (choose_placement resolves auto), not {placement!r}")
        self.placement = placement
        # uint8 [N, C, H, W]; on a CPU device `.to` returns the same (memory-mapped) tensor, no copy.
        self.images = images.to(device, non_blocking=True) if placement == "device" else images
        self.labels = labels.to(device) if labels is not None else None  # small: always on the device
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size, self.hflip = rank, world_size, hflip
        # Drop the ragged tail so every step (and every rank) sees a full batch.
        self.steps_per_epoch = len(images) // (batch_size * world_size)

    def _order(self, epoch: int) -> torch.Tensor:
        """This rank's stride of the epoch's permutation, on the CPU."""
        # (seed, epoch) -> one integer; 1,000,003 is a prime larger than any epoch count, so no two
        # (seed, epoch) pairs of a run collide. On the CPU: the order is then the same on any device.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g)[self.rank :: self.world_size]

    def permutation(self, epoch: int) -> torch.Tensor:
        return self._order(epoch).to(self.device)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Yield (images float [B, C, H, W] in [-1, 1], labels or None) from batch `start` of `epoch`."""
        order = self._order(epoch)  # on the CPU, for the host gathers
        perm = order.to(self.device)  # on the device, for the labels (and the images when they are there)
        if self.placement == "host":
            yield from self._host_epoch(order, perm, start)
            return
        for i in range(start, self.steps_per_epoch):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.scale(self.images[idx]), (self.labels[idx] if self.labels is not None else None)

    def _host_epoch(self, order: torch.Tensor, perm: torch.Tensor, start: int):
        """Gather batch i+1 on the host (a background thread) while the device works on batch i."""
        b, pin = self.batch_size, self.device.type == "cuda"

        def gather(i: int) -> torch.Tensor:
            # A fresh pinned buffer per batch is safe with non_blocking copies: PyTorch's pinned-memory
            # allocator reuses a block only once the copy that read it has finished.
            out = torch.empty((b, *self.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
            return torch.index_select(self.images, 0, order[i * b : (i + 1) * b], out=out)

        with ThreadPoolExecutor(1, thread_name_prefix="ganforge-batches") as pool:
            if start >= self.steps_per_epoch:
                return
            ahead = pool.submit(gather, start)
            for i in range(start, self.steps_per_epoch):
                host = ahead.result()
                if i + 1 < self.steps_per_epoch:
                    ahead = pool.submit(gather, i + 1)
                x = host.to(self.device, non_blocking=True)
                idx = perm[i * b : (i + 1) * b]
                yield self.scale(x), (self.labels[idx] if self.labels is not None else None)

    def scale(self, batch: torch.Tensor) -> torch.Tensor:
        # uint8 0..255 -> [-1, 1], the range of the generators' tanh; scaled on the device, so a
        # batch crosses the bus as uint8, a quarter of its float32 size
        x = batch.float().mul_(2.0 / 255.0).sub_(1.0)
        if self.hflip:
            # drawn from the device's global RNG in the main thread, the one stream a checkpoint saves
            flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        return x

    def counted(self, x: torch.Tensor) -> int:
        """The images a batch counts for in the progress (kimg, the EMA's half-life): its size."""
        return x.shape[0]


class PoissonBatches(DeviceBatches):
    """Poisson sampling, which DP-SGD's accounting assumes (Abadi et al. 2016; Opacus's DPDataLoader):
    at every step each image is in the batch independently with probability q = batch_size / N, so
    batches vary in size. `steps_per_epoch` stays N // batch_size (an epoch is 1/q steps).

    Step k's draw comes from a generator seeded by `key()` alone (a secret and the number of steps the
    privacy ledger has counted, training/privacy.py), so a resume restores the stream from the ledger,
    and a rollback, whose steps the ledger keeps, draws fresh batches rather than replaying old ones.
    The progress counts the expected batch size: the actual size says whether an image was drawn.
    """

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], *, key: Callable[[], int], **kw):
        super().__init__(images, labels, **kw)
        if self.world_size != 1:
            raise ValueError("Poisson batches run on one process")
        self.key, self.rate = key, self.batch_size / len(images)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        for _ in range(start, self.steps_per_epoch):
            g = torch.Generator().manual_seed(self.key())
            idx = (torch.rand(len(self.images), generator=g) < self.rate).nonzero().squeeze(1)
            x = torch.index_select(self.images, 0, idx.to(self.images.device)).to(self.device, non_blocking=True)
            yield self.scale(x), (self.labels[idx.to(self.labels.device)] if self.labels is not None else None)

    def counted(self, x: torch.Tensor) -> int:
        return self.batch_size
