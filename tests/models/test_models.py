"""Every registered architecture: image shape and range, one logit per image, conditional or not."""

from __future__ import annotations

import pytest
import torch

from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.models import MODELS, build_models

CASES = [(arch, c, s, k) for arch in MODELS.names() for c in (1, 3) for s in (28, 32, 64) for k in (0, 10)]


@pytest.mark.parametrize("arch, channels, size, num_classes", CASES)
def test_shapes_and_ranges(arch, channels, size, num_classes):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, z_dim=16, g_channels=8, d_channels=8, conditional=num_classes > 0)
    try:
        g, d = build_models(cfg, channels=channels, size=size, num_classes=num_classes)
    except ConfigError as exc:  # an architecture may not make every size; it must say so
        assert "cannot make" in str(exc)
        pytest.skip(str(exc))
    labels = torch.arange(5) % num_classes if num_classes else None
    images = g(torch.randn(5, 16), labels)
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    logits = d(images, labels)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", MODELS.names())
def test_conditional_models_depend_on_label(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, z_dim=16, g_channels=8, d_channels=8, conditional=True)
    g, d = build_models(cfg, channels=1, size=28, num_classes=10)
    g.eval()
    d.eval()
    z = torch.randn(1, 16).repeat(2, 1)
    a, b = g(z, torch.tensor([1, 7]))
    assert not torch.allclose(a, b)
    x = a[None].repeat(2, 1, 1, 1)
    logit_1, logit_7 = d(x, torch.tensor([1, 7]))
    assert not torch.equal(logit_1, logit_7)


def test_label_maps_condition_dcgan_d_after_its_first_layer():
    """d_condition=input: half the first layer's channels are a learned map per class (Bie et al. 2023),
    the projection is gone, and the label changes the logit."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", d_channels=8, conditional=True, d_condition="input", d_norm="layer")
    _, d = build_models(cfg, channels=1, size=28, num_classes=10)
    assert d.features[0].out_channels == 4 and d.label_maps.embed.weight.shape == (10, 4)
    assert d.project.embed is None
    x = torch.randn(1, 1, 28, 28).repeat(2, 1, 1, 1)
    a, b = d(x, torch.tensor([1, 7]))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="pass labels"):
        d(x)


def test_a_class_head_gives_class_logits_beside_an_unconditional_logit():
    """d_condition=classifier (AC-GAN): D's logit ignores the label, its class head gives [B, K] logits."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", d_channels=8, conditional=True, d_condition="classifier", d_norm="layer")
    _, d = build_models(cfg, channels=1, size=28, num_classes=10)
    assert d.project.embed is None and d.label_maps is None
    x = torch.randn(3, 1, 28, 28)
    logits, classes = d(x, torch.tensor([1, 7, 3]), with_classes=True)
    assert logits.shape == (3,) and classes.shape == (3, 10)
    assert torch.equal(d(x, torch.tensor([0, 0, 0])), logits)
    with pytest.raises(ValueError, match="no class head"):
        build_models(ModelConfig(arch="dcgan", d_channels=8, conditional=True), channels=1, size=28,
                     num_classes=10)[1](x, torch.tensor([1, 7, 3]), with_classes=True)


@pytest.mark.parametrize("cfg, message", [
    (ModelConfig(arch="resnet", conditional=True, d_condition="classifier"), "only the dcgan discriminator takes"),
    (ModelConfig(arch="resnet", conditional=True, d_condition="input"), "only the dcgan discriminator takes"),
    (ModelConfig(arch="mlp", conditional=True, d_condition="input"), "the mlp one conditions its own way"),
    (ModelConfig(arch="dcgan", conditional=False, d_condition="input"), "set model.conditional=true"),
    (ModelConfig(arch="dcgan", conditional=True, d_condition="concat"), "choose one of: projection, input"),
])
def test_label_maps_where_d_cannot_take_them_are_refused(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_models(cfg, channels=1, size=28, num_classes=10)


def test_impossible_size_is_refused_with_choices():
    with pytest.raises(ConfigError, match="cannot make 30x30 images; sizes it can make"):
        build_models(ModelConfig(arch="dcgan"), channels=1, size=30, num_classes=0)


def test_conditional_without_labels_is_refused():
    with pytest.raises(ConfigError, match="needs a labelled dataset"):
        build_models(ModelConfig(conditional=True), channels=3, size=64, num_classes=0)


def test_dcgan_init_matches_paper():
    g, _ = build_models(ModelConfig(g_channels=64), channels=1, size=64, num_classes=0)
    w = g.net[0].weight
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3


def test_fully_connected_layers_match_seed_003():
    """Default widths give 003's G 100-256-512-1024-784 and D 784-1024-512-256-1."""
    g, d = build_models(ModelConfig(arch="mlp"), channels=1, size=28, num_classes=0)
    def linear(m):
        return [(lin.in_features, lin.out_features) for lin in m.modules() if isinstance(lin, torch.nn.Linear)]

    assert linear(g) == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert linear(d) == [(784, 1024), (1024, 512), (512, 256), (256, 1)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules())
    g_bn, d_bn = build_models(ModelConfig(arch="mlp-bn", dropout=0.3), channels=1, size=28, num_classes=0)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in g_bn.modules()) == 3
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in g_bn.modules()) == 3
    assert sum(isinstance(m, torch.nn.Dropout) for m in d_bn.modules()) == 3


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_dcgan_critic_without_batch_norm(norm):
    """A WGAN-GP critic: each sample's logit must not depend on the rest of the batch."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", d_channels=8, d_norm=norm)
    _, d = build_models(cfg, channels=3, size=32, num_classes=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-6)


def test_upsample_bilinear_mode():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="upsample", z_dim=16, g_channels=8, d_channels=8, upsample="bilinear")
    g, _ = build_models(cfg, channels=3, size=64, num_classes=0)
    assert {m.mode for m in g.modules() if isinstance(m, torch.nn.Upsample)} == {"bilinear"}
    assert g(torch.randn(2, 16)).shape == (2, 3, 64, 64)
