"""Optimizers in a registry: Adam (Kingma & Ba 2015, the DCGAN choice) and SGD (the textbook GAN's
alternative), and the learning rate as one pure function of progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ganforge.config import OptimConfig
from ganforge.registry import Registry

OptimizerBuilder = Callable[[Iterable[torch.nn.Parameter], float, OptimConfig, torch.device], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def adam(params, lr: float, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    # One fused kernel for the whole update instead of a loop over parameters (CPU and CUDA).
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, foreach=True)


def learning_rates(cfg: OptimConfig, *, step: int, total_steps: int, lr_scale: float = 1.0) -> tuple[float, float]:
    """(G's, D's) learning rate at `step` of `total_steps`: constant, then falling linearly from the
    fraction `lr_decay_start` of training to `lr_decay_to` of the base at the end, times `lr_scale`
    (the product of the health guard's rollback cuts). The horizon is the configured epochs, not
    max_steps, so a run stopped early and resumed follows the same schedule."""
    factor = 1.0
    if cfg.lr_decay_start < 1.0:
        frac = step / max(total_steps, 1)
        ramp = min(max((frac - cfg.lr_decay_start) / (1.0 - cfg.lr_decay_start), 0.0), 1.0)
        factor = 1.0 - ramp * (1.0 - cfg.lr_decay_to)
    return cfg.lr_g * lr_scale * factor, cfg.lr_d * lr_scale * factor


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group at `lr`, times the group's own `lr_mult` where it has one (optim.lr_d_label)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
