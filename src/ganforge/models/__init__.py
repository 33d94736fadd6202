"""Generator/discriminator pairs in a registry: `build_models(cfg.model, channels=, size=, num_classes=)`.

Every generator maps `(z [B, z_dim], labels [B] or None)` to images [B, C, H, W] in [-1, 1];
every discriminator maps `(images, labels or None)` to one logit per image, [B]; one with an auxiliary
class head (`model.d_condition=classifier`) also to its class logits, [B, K], when called `with_classes=True`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.models.common import MinibatchStd
from ganforge.registry import Registry

# build(cfg, *, channels, size, num_classes) -> (generator, discriminator)
ModelBuilder = Callable[..., tuple[nn.Module, nn.Module]]
MODELS: Registry[ModelBuilder] = Registry("architecture")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name)


def build_models(cfg: ModelConfig, *, channels: int, size: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Build G and D for images of `channels` x `size` x `size`; `num_classes` > 0 makes them conditional.

    `model.arch_d` takes D from another architecture's pair; `model.d_sn` spectrally normalises D.
    """
    # one class conditions on nothing; the folder data set reports 0 when its images are not in subfolders
    if cfg.conditional and num_classes < 2:
        raise ConfigError("model.conditional=true needs a labelled dataset (this one has no class labels): use "
                          "mnist, fashion-mnist, mnist-5k, cifar10 or a folder with one subfolder per class, "
                          "or set model.conditional=false")
    kw = dict(channels=channels, size=size, num_classes=num_classes if cfg.conditional else 0)
    g, d = MODELS.get(cfg.arch)(cfg, **kw)
    if cfg.arch_d and cfg.arch_d != cfg.arch:
        # the other pair is built whole and its G dropped: each builder knows only its own pair's D
        _, d = MODELS.get(cfg.arch_d)(cfg, **kw)
    if cfg.d_mbstd and not any(isinstance(m, MinibatchStd) for m in d.modules()):
        raise ConfigError(f"model.d_mbstd={cfg.d_mbstd}: the {cfg.arch_d or cfg.arch} discriminator has no minibatch "
                          "standard deviation layer; use arch (or arch_d) dcgan or resnet, or d_mbstd=0")
    if cfg.d_condition != "projection" and cfg.d_condition not in getattr(d, "conditions", ("projection",)):
        raise ConfigError(f"model.d_condition={cfg.d_condition}: only the dcgan discriminator takes it (the "
                          f"{cfg.arch_d or cfg.arch} one conditions its own way); use arch (or arch_d) dcgan, or "
                          "d_condition=projection")
    if cfg.d_condition != "projection" and not cfg.conditional:
        raise ConfigError(f"model.d_condition={cfg.d_condition} conditions D on the class: set "
                          "model.conditional=true, or d_condition=projection")
    if cfg.d_sn:
        spectral_normalise(d)
    return g, d


def spectral_normalise(module: nn.Module) -> nn.Module:
    """Divide every weight of `module` by its largest singular value (Miyato et al. 2018).

    Each convolution, linear layer and projection embedding gets PyTorch's parametrisation, which
    keeps a power-iteration estimate of sigma that one more step refines at every training forward.
    Normalisation layers are left alone (a spectrally normalised D is usually built without them).
    """
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        # the projection's embedding too: an unbounded class term would undo the Lipschitz bound
        # that spectral norm gives the rest of D
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return module


# Importing the architecture modules fills MODELS.
from ganforge.models import dcgan, mlp, resnet, upsample  # noqa: E402,F401
