"""A log window: the step values summed on the device, and the images/s since the last window end.

Nothing here reads a tensor back: the sums and counts go to `Dist.agree`, which averages them
over the ranks in one all-reduce and one host sync at the window's end.
"""

from __future__ import annotations

import time

import torch


class Window:
    def __init__(self, *, skip_non_finite: bool, images: int):
        # Under fp16 a step the loss scaler skipped (an overflow) may have an infinite loss: it is left
        # out of the mean, counted on the device, instead of making the health guard roll back.
        self.skip_non_finite = skip_non_finite
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int | torch.Tensor] = {}
        self._since = (time.perf_counter(), images)

    def add(self, **values: torch.Tensor) -> None:
        """Add step values; each key is averaged over the steps that reported it."""
        for k, v in values.items():
            v = v.detach().float()
            count: int | torch.Tensor = 1
            if self.skip_non_finite:
                count = torch.isfinite(v).float()
                v = torch.where(count > 0, v, torch.zeros_like(v))
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
            self._counts[k] = self._counts[k] + count if k in self._counts else count

    def take(self) -> tuple[dict[str, torch.Tensor], dict[str, int | torch.Tensor]]:
        """(sums, counts) of the window, which starts afresh."""
        out = (self._sums, self._counts)
        self._sums, self._counts = {}, {}
        return out

    def rate(self, images: int) -> float:
        """Images per second since the previous call (or the window's start)."""
        now = time.perf_counter()
        rate = (images - self._since[1]) / max(now - self._since[0], 1e-9)
        self._since = (now, images)
        return rate
