"""Generator/discriminator pairs in a registry: `build_models(cfg.model, channels=, size=, num_classes=)`.

Every generator maps `(z [B, z_dim], labels [B] or None)` to images [B, C, H, W] in [-1, 1];
every discriminator maps `(images, labels or None)` to one logit per image, [B].
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.registry import Registry

# build(cfg, *, channels, size, num_classes) -> (generator, discriminator)
ModelBuilder = Callable[..., tuple[nn.Module, nn.Module]]
MODELS: Registry[ModelBuilder] = Registry("architecture")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name)


def build_models(cfg: ModelConfig, *, channels: int, size: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Build G and D for images of `channels` x `size` x `size`; `num_classes` > 0 makes them conditional."""
    if cfg.conditional and num_classes < 2:
        raise ConfigError("model.conditional=true needs a labelled dataset (this one has no class labels): use "
                          "mnist, fashion-mnist, mnist-5k, cifar10 or a folder with one subfolder per class, "
                          "or set model.conditional=false")
    build = MODELS.get(cfg.arch)
    return build(cfg, channels=channels, size=size, num_classes=num_classes if cfg.conditional else 0)


# Importing the architecture modules fills MODELS.
from ganforge.models import dcgan, mlp, upsample  # noqa: E402,F401
