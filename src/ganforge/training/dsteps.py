"""How many discriminator steps come before each generator step, constant or adaptive.

Bie, Kamath and Zhang ("Private GANs, Revisited", TMLR 2023) find that the noise DP-SGD adds to D's
updates is best answered by many D steps per G step (50 for MNIST at epsilon = 10), and propose an
adaptive schedule: keep an exponential moving average (decay 0.99 per G step) of D's accuracy on
*generated* images, measured before each G step (here: on the generated images of the last D step
before it, which costs no extra pass); once `grace` G steps have
passed at the current rate and that average is at most the threshold (0.7), D is losing its grip:
move up one notch of the ladder 1, 2, 5, 10, 20, 50, 100, ... and start the grace period again.

The signal reads only D's logits on generated images: a function of D's privately trained weights
and of G, so post-processing, which costs no privacy (their code measures it the same way; the real
images of a held-out split it also scores are for logging only, and we log none).
"""

from __future__ import annotations

import torch

from ganforge.errors import ConfigError

LADDER = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class DSteps:
    """`loss.n_critic` D steps per G step; with `adaptive`, the rate climbs the ladder from there."""

    def __init__(self, n_critic: int, *, adaptive: bool = False, threshold: float = 0.7, grace: int = 200,
                 beta: float = 0.99):
        if adaptive and n_critic not in LADDER:
            raise ConfigError(f"privacy.adaptive_d_steps=true starts at loss.n_critic={n_critic}, which is not on "
                              f"Bie et al.'s ladder; choose one of {', '.join(map(str, LADDER[:8]))}, ...")
        self.adaptive, self.threshold, self.grace, self.beta = adaptive, threshold, grace, beta
        self.rate, self.taken, self.g_steps, self.ema = n_critic, 0, 0, -1.0  # ema < 0: nothing measured yet

    def g_step_due(self) -> bool:
        """Whether the D step about to be taken is the last before a G step."""
        return self.taken + 1 >= self.rate

    def d_step(self, d_fake_logits: torch.Tensor, *, train_g: bool) -> None:
        """Count a D step; before a G step (adaptive only) judge D's accuracy on the generated images."""
        self.taken += 1
        if not train_g:
            return
        self.taken = 0
        if not self.adaptive:
            return
        accuracy = (d_fake_logits.detach() < 0).float().mean().item()  # D calls them fake: sigmoid < 0.5
        self.ema = accuracy if self.ema < 0 else self.beta * self.ema + (1 - self.beta) * accuracy
        self.g_steps += 1
        if self.g_steps >= self.grace and self.ema <= self.threshold and self.rate < LADDER[-1]:
            self.rate, self.g_steps = LADDER[LADDER.index(self.rate) + 1], 0

    def state_dict(self) -> dict:
        return {"rate": self.rate, "taken": self.taken, "g_steps": self.g_steps, "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.rate, self.taken, self.g_steps = int(state["rate"]), int(state["taken"]), int(state["g_steps"])
        self.ema = float(state["ema"])
