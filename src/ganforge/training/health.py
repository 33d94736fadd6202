"""Training-health checks, run at the end of each log window (the only time the loop reads values back).

Checks return a verdict and never steer the loop themselves; the trainer acts on it in one place.
- A non-finite loss or weight means the state since the last checkpoint is unusable: the verdict
  is a rollback to that checkpoint with lower learning rates (`train.max_rollbacks` times at most).
- The discriminator winning completely for a long stretch (D(G(z)) near 0 while D(x) near 1) and a
  collapse of the fixed-latent samples to nearly one image are warned about, once each.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Verdict:
    """What the loop does at the end of a log window: go on, roll back (and why), or stop (and why).

    `exit_code` is what the command returns after a stop: 0 for a planned one (max_steps), 128 + the
    signal number for a signal, as a shell reports a killed process.
    """

    rollback: str = ""
    stop: str = ""
    exit_code: int = 0


class HealthGuard:
    def __init__(self, *, loss_has_probabilities: bool, d_wins_steps: int = 500, collapse_ratio: float = 0.1):
        self.probabilities = loss_has_probabilities  # sigmoid(logit) is a probability only for bce-type losses
        self.d_wins_steps = d_wins_steps
        self.collapse_ratio = collapse_ratio
        self._d_wins_since: int | None = None
        self.warned: set[str] = set()

    def check(self, record: dict, *, weights_finite: bool) -> str:
        """Why the state since the last checkpoint must be rolled back, or "" when it is healthy."""
        self.check_balance(record)
        losses = {k: record[k] for k in ("loss_d", "loss_g") if k in record}  # no G step, no loss_g
        if weights_finite and all(math.isfinite(v) for v in losses.values()):
            return ""
        shown = ", ".join(f"{k}={v}" for k, v in losses.items())
        return f"non-finite loss or weight at step {record['step']} ({shown})"

    @staticmethod
    @torch.no_grad()
    def all_finite(modules: Iterable[torch.nn.Module]) -> torch.Tensor:
        """A 0-d bool tensor on the modules' device (no host sync): every parameter is finite."""
        flags = [torch.isfinite(p).all() for m in modules for p in m.parameters()]
        return torch.stack(flags).all() if flags else torch.tensor(True)

    def check_balance(self, record: dict) -> None:
        if not self.probabilities or "d_fake" not in record or "d_real" not in record:  # private: no D(x)
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
