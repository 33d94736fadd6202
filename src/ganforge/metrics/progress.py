"""How long an evaluation will take, said before its long feature pass, and a bar with the time to go.

The cost of each kind of work (generating an image, one network's features of one image) is
measured on the first batch of the evaluation itself, on this machine, so the estimate is the
images still to process times this machine's measured seconds per image. Progress is counted in
those estimated seconds, so the time to go stays right when cheap and expensive passes follow
each other (the classifier is ~1000x faster than Inception). On a terminal a tqdm bar; in a log
file a line at every 10%.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Optional

QUIET_BELOW = 10.0  # seconds: a shorter evaluation gets its estimate line but no progress display


def duration(seconds: float) -> str:
    """`45 s`, `3 min 05 s`, `1 h 12 min`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class EvalProgress:
    """An evaluation's work, measured in estimated seconds; `advance(cost)` after each batch."""

    def __init__(self, total: float, *, log: Optional[Callable[[str], None]], tty: Optional[bool] = None):
        self.estimate, self.elapsed = total, 0.0
        # max(.., 1e-9): an evaluation whose every side is cached has no work left to divide by
        self.total, self.done, self.log = max(total, 1e-9), 0.0, log
        self.start, self.next_line = time.perf_counter(), 1   # in tenths of the work
        self.bar = None
        if total < QUIET_BELOW:
            self.log = None
        elif log is not None and (sys.stderr.isatty() if tty is None else tty):
            from tqdm import tqdm

            self.bar = tqdm(total=round(self.total, 3), file=sys.stderr, leave=False, dynamic_ncols=True,
                            bar_format="eval {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} to go")

    def advance(self, cost: float) -> None:
        self.done = min(self.total, self.done + cost)
        if self.done > self.total * (1 - 1e-9):
            # the batch costs summed in floating point can fall short of their precomputed total
            # by an ulp; without snapping, the last 10 % line would never come
            self.done = self.total
        if self.bar is not None:
            self.bar.update(round(self.done - self.bar.n, 3))  # rounded: tqdm's counter drifts on float steps
        elif self.log is not None and 10 * self.done >= self.next_line * self.total:
            fraction = self.done / self.total
            # the time to go from the rate so far, which includes this machine's load now, rather than
            # from the first batch's estimate alone
            left = (time.perf_counter() - self.start) * (1 - fraction) / max(fraction, 1e-9)
            self.log(f"  eval {fraction:4.0%} done, about {duration(left)} to go")
            # the next tenth after this one: a batch that covers several tenths prints one line, not several
            self.next_line = int(10 * fraction + 1e-9) + 1

    def close(self) -> None:
        self.elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            self.bar.close()
