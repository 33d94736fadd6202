"""Progress display: a tqdm bar per epoch on a terminal, plain log lines otherwise (CI, files)."""

from __future__ import annotations

import sys


class EpochBar:
    def __init__(self, *, epoch: int, epochs: int, total: int, start: int, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.label = f"epoch {epoch + 1}/{epochs}"
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=self.label, unit="step", leave=True, dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, record: dict) -> None:
        if not self.enabled or "loss_d" not in record:
            return
        g = f"loss_g {record['loss_g']:.3f}  " if "loss_g" in record else ""  # absent: no G step in the window
        text = (f"loss_d {record['loss_d']:.3f}  {g}D(x) {record['d_real']:.2f}  "
                f"D(G(z)) {record['d_fake']:.2f}  {record['images_per_s']:.0f} img/s")
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
        else:
            print(f"{self.label} step {record['step']}  {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
