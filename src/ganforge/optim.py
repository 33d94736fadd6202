"""Optimizers in a registry: Adam (Kingma & Ba 2015, the DCGAN choice) and SGD (named by seed 000)."""

from __future__ import annotations

from typing import Callable, Iterable

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
