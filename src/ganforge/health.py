"""Training-health checks, run at each log interval (the only time the loop reads values back).

- A non-finite loss or weight means the state since the last checkpoint is unusable: the trainer
  rolls back to that checkpoint and lowers the learning rates (`train.max_rollbacks` times at most).
- The discriminator winning completely for a long stretch (D(G(z)) near 0 while D(x) near 1) and a
  collapse of the fixed-latent samples to nearly one image are warned about, once each.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import torch


class HealthGuard:
    def __init__(self, *, loss_has_probabilities: bool, d_wins_steps: int = 500, collapse_ratio: float = 0.1):
        self.probabilities = loss_has_probabilities  # sigmoid(logit) is a probability only for bce-type losses
        self.d_wins_steps = d_wins_steps
        self.collapse_ratio = collapse_ratio
        self._d_wins_since: int | None = None
        self.warned: set[str] = set()

    @staticmethod
    def finite_record(record: dict) -> bool:
        return all(math.isfinite(record[k]) for k in ("loss_d", "loss_g") if k in record)

    @staticmethod
    @torch.no_grad()
    def finite_weights(modules: Iterable[torch.nn.Module]) -> bool:
        flags = [torch.isfinite(p).all() for m in modules for p in m.parameters()]
        return bool(torch.stack(flags).all()) if flags else True

    def check_balance(self, record: dict) -> None:
        if not self.probabilities or "d_fake" not in record:
            return
        if record["d_fake"] < 0.02 and record["d_real"] > 0.98:
            self._d_wins_since = record["step"] if self._d_wins_since is None else self._d_wins_since
            if record["step"] - self._d_wins_since >= self.d_wins_steps:
                self._warn("d-wins", f"the discriminator has won completely since step {self._d_wins_since} "
                           f"(D(G(z)) = {record['d_fake']:.3f}); the generator gets almost no gradient: try "
                           "label smoothing, a lower loss.lr_d or the wgan-gp loss")
        else:
            self._d_wins_since = None

    def check_diversity(self, samples: torch.Tensor, real: torch.Tensor, *, step: int) -> float:
        """Mean pairwise distance of fixed-latent samples relative to real images; warn when tiny."""
        def spread(x: torch.Tensor) -> float:
            flat = x.flatten(1).float()
            return torch.cdist(flat, flat).mean().item()

        ratio = spread(samples) / max(spread(real), 1e-8)
        if ratio < self.collapse_ratio:
            self._warn("collapse", f"step {step}: generated samples are nearly identical (diversity {ratio:.3f} "
                       "of the real images'): mode collapse; look at the sample grid")
        return ratio

    def _warn(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=3)
