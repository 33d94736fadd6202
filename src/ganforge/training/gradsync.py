"""Gradient averaging across torchrun ranks, overlapped with the backward pass.

DistributedDataParallel is not used because a GAN step calls D several times before one backward
(real images, generated images, and the gradient penalties' double backward) and calls it again,
frozen, inside G's step; DDP expects one forward per backward. StyleGAN2-ADA averages by hand after
the backward for the same reason, which leaves the network idle during the backward and the
devices idle during the all-reduce.

Here each parameter's gradient hook (`register_post_accumulate_grad_hook`, which runs once per
backward call, after autograd has summed every path into `.grad`, double backward included) marks
the parameter ready. Parameters are grouped into buckets of about `bucket_mb` in reverse
registration order (roughly the order backward produces them, as DDP does), and a bucket whose
gradients are all ready is flattened and its all-reduce started asynchronously while backward goes
on. Buckets are always started in index order, so every rank issues the same collectives in the same
order (NCCL requires it). `finish()` starts what is left, waits, and writes the averages back.

`torch.autograd.grad(..., create_graph=True)` inside a penalty asks only for input gradients, so it
never fires these hooks: only the real `loss.backward()` does, and only between `arm()` and `finish()`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class GradSync:
    def __init__(self, module: nn.Module, *, world_size: int, bucket_mb: float = 25.0):
        self.world_size = world_size
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.buckets: list[list[torch.nn.Parameter]] = []
        self.enabled = world_size > 1 and bool(self.params)
        if not self.enabled:
            return
        limit, size, bucket = bucket_mb * 2**20, 0, []
        for p in reversed(self.params):
            bucket.append(p)
            size += p.numel() * p.element_size()
            if size >= limit:
                self.buckets.append(bucket)
                bucket, size = [], 0
        if bucket:
            self.buckets.append(bucket)
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._armed = False
        self._reset()
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._ready)
        self.launch_log: list[tuple[int, int]] = []  # (bucket, hooks fired so far) of the last backward

    def _reset(self) -> None:
        self._pending = [len(b) for b in self.buckets]
        self._next = 0  # the next bucket to start: strictly in index order
        self._work: list[tuple[dist.Work, torch.Tensor, int]] = []
        self._fired = 0

    def arm(self) -> GradSync:
        """Start watching for gradients of the next backward (call right before it)."""
        if self.enabled:
            self._reset()
            self.launch_log = []
            self._armed = True
        return self

    def _ready(self, p: torch.Tensor) -> None:
        if not self._armed:
            return
        self._fired += 1
        i = self._bucket_of[id(p)]
        self._pending[i] -= 1
        while self._next < len(self.buckets) and self._pending[self._next] == 0:
            self._launch(self._next)
            self._next += 1

    def _launch(self, i: int) -> None:
        # A parameter that got no gradient this backward (unused on every rank alike) sends zeros.
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.buckets[i]]
        flat = torch.cat([g.reshape(-1) for g in grads])
        work = dist.all_reduce(flat, async_op=True)
        # None only for a rank outside the group; every rank is in the default group.
        assert work is not None
        self._work.append((work, flat, i))
        self.launch_log.append((i, self._fired))

    def finish(self) -> None:
        """Wait for every bucket and write the rank-averaged gradients back (call after backward)."""
        if not self.enabled:
            return
        while self._next < len(self.buckets):  # parameters without a gradient never fired their hook
            self._launch(self._next)
            self._next += 1
        self._armed = False
        for work, flat, i in self._work:
            work.wait()
            flat.div_(self.world_size)
            offset = 0
            for p in self.buckets[i]:
                n = p.numel()
                if p.grad is not None:
                    p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n
        self._work = []
