"""Spectral norm, minibatch standard deviation, the EMA half-life and the learning-rate decay, each on its
own property."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganforge.config import ModelConfig, from_dict, preset_config, to_dict
from ganforge.errors import ConfigError
from ganforge.models import MODELS, build_models
from ganforge.training.ema import ema_beta, update_ema


def _top_singular_values(module: nn.Module) -> list[float]:
    """sigma_max of every normalised weight as SNGAN defines it: the weight reshaped to [out, -1]."""
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()  # the parametrisation returns W / sigma
            out.append(torch.linalg.matrix_norm(w.flatten(1), ord=2).item())
    return out


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "mlp"])
def test_spectral_norm_keeps_every_d_layer_near_one(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, g_channels=8, d_channels=8, d_sn=True, d_norm="none")
    _, d = build_models(cfg, channels=1, size=28, num_classes=0)
    x = torch.randn(16, 1, 28, 28)
    for _ in range(30):  # each training forward refines the power-iteration estimate of sigma
        d(x)
    sigmas = _top_singular_values(d)
    assert len(sigmas) >= 3
    assert all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    _, plain = build_models(ModelConfig(arch=arch, g_channels=8, d_channels=8, d_norm="none"), channels=1, size=28,
                            num_classes=0)
    assert any(abs(s - 1) > 0.2 for s in _top_singular_values(plain))  # without it they are not


def test_minibatch_std_adds_one_map_that_measures_variety_within_each_group():
    from ganforge.models.common import MinibatchStd

    torch.manual_seed(0)
    layer = MinibatchStd(4)
    same = torch.randn(1, 3, 5, 5).repeat(8, 1, 1, 1)
    out = layer(same)
    assert out.shape == (8, 4, 5, 5) and torch.equal(out[:, :3], same)
    assert out[:, 3].abs().max() < 1e-3  # identical samples: no spread
    varied = torch.randn(8, 3, 5, 5)
    assert (layer(varied)[:, 3] > 0.5).all()
    # Sample i belongs to group i mod 2 (8 samples, groups of 4): changing sample 0 moves the map of
    # samples 0, 2, 4, 6 only.
    moved = varied.clone()
    moved[0] += 5
    diff = (layer(moved)[:, 3] - layer(varied)[:, 3]).abs().amax(dim=(1, 2))
    assert (diff[0::2] > 0.1).all() and (diff[1::2] == 0).all()
    assert layer(torch.randn(6, 3, 5, 5)).shape == (6, 4, 5, 5)  # a batch not divisible by 4: groups of 3


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_d_mbstd_lets_d_see_the_batch_and_other_archs_refuse_it(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, g_channels=8, d_channels=8, d_norm="none", d_mbstd=4)
    _, d = build_models(cfg, channels=1, size=28, num_classes=0)
    x = torch.randn(8, 1, 28, 28)
    copies = x[:1].repeat(8, 1, 1, 1)
    assert not torch.allclose(d(x)[0], d(copies)[0])  # the same first image, scored by its company
    with pytest.raises(ConfigError, match="model.d_mbstd=4"):
        build_models(ModelConfig(arch="mlp", d_mbstd=4), channels=1, size=28, num_classes=0)


def test_arch_d_takes_the_discriminator_of_another_architecture():
    g, d = build_models(ModelConfig(arch="dcgan", arch_d="resnet", g_channels=8, d_channels=8), channels=1,
                        size=28, num_classes=0)
    assert type(g).__name__ == "DCGANGenerator" and type(d).__name__ == "ResNetDiscriminator"


@pytest.mark.parametrize("batch", [32, 128])
def test_ema_half_life_is_the_same_horizon_at_any_batch(batch):
    # A weight jumps from 0 to 1; after `half_life` images the average has covered half the jump,
    # whatever the batch size, and after two half-lives three quarters.
    half_life = 12_800
    ema, model = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    nn.init.zeros_(ema.weight)
    nn.init.ones_(model.weight)
    for _ in range(half_life // batch):
        update_ema(ema, model, ema_beta(batch, half_life))
    assert math.isclose(ema.weight.item(), 0.5, rel_tol=1e-4)
    for _ in range(half_life // batch):
        update_ema(ema, model, ema_beta(batch, half_life))
    assert math.isclose(ema.weight.item(), 0.75, rel_tol=1e-4)


def test_ema_rampup_shortens_the_half_life_early():
    assert ema_beta(64, 10_000, images_seen=1_000, rampup=0.05) == pytest.approx(0.5 ** (64 / 50))
    assert ema_beta(64, 10_000, images_seen=10**7, rampup=0.05) == pytest.approx(0.5 ** (64 / 10_000))


def test_old_configs_with_a_per_step_ema_decay_load_with_the_same_horizon():
    data = to_dict(preset_config("demo"))
    data["model"].pop("ema_kimg")
    data["model"]["ema"] = 0.999  # per G step at batch 64: half-life ln 0.5 / ln 0.999 steps
    data["train"]["batch_size"] = 64
    cfg = from_dict(data)
    assert cfg.model.ema_kimg == pytest.approx(64 * 692.8 / 1000, rel=1e-3)


def test_lr_decays_linearly_in_the_last_part(tmp_path):
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    cfg.data.limit, cfg.model.g_channels, cfg.model.d_channels = 128, 8, 8
    cfg.train.batch_size, cfg.train.epochs = 32, 10  # 4 steps an epoch: 40 steps in all
    cfg.optim.lr_decay_start, cfg.optim.lr_decay_to = 0.5, 0.1
    trainer = Trainer(cfg, run_dir=tmp_path)
    lrs = {}
    x, labels = next(trainer.batches.epoch(0))
    for step in (0, 20, 30, 40):  # the rate a step uses is set as it starts
        trainer.progress.step = step
        trainer.train_step(x, labels)
        lrs[step] = trainer.opt_g.param_groups[0]["lr"] / cfg.optim.lr_g
    assert lrs[0] == pytest.approx(1.0) and lrs[20] == pytest.approx(1.0)
    assert lrs[30] == pytest.approx(0.55) and lrs[40] == pytest.approx(0.1)


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_architecture_trains_with_r1_r2_and_rpgan(arch, tmp_path):
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    cfg.data.limit, cfg.model.g_channels, cfg.model.d_channels = 64, 8, 8
    cfg.model.arch, cfg.model.d_norm, cfg.train.batch_size = arch, "none", 32
    cfg.loss.name, cfg.loss.r1_gamma, cfg.loss.r2_gamma = "rpgan", 1.0, 1.0
    trainer = Trainer(cfg, run_dir=tmp_path)
    before = [p.detach().clone() for p in trainer.D.parameters()]
    for x, labels in trainer.batches.epoch(0):
        trainer.train_step(x, labels)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.D.parameters()))
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


def test_learning_rates_are_a_pure_function_of_progress():
    from ganforge.config import OptimConfig
    from ganforge.training.optim import learning_rates

    cfg = OptimConfig(lr_g=1e-3, lr_d=2e-3, lr_decay_start=0.5, lr_decay_to=0.1)
    assert learning_rates(cfg, step=10, total_steps=40) == (1e-3, 2e-3)
    lr_g, lr_d = learning_rates(cfg, step=30, total_steps=40, lr_scale=0.5)
    assert lr_g == pytest.approx(1e-3 * 0.5 * 0.55) and lr_d == pytest.approx(2e-3 * 0.5 * 0.55)
    assert learning_rates(OptimConfig(lr_g=1.0, lr_d=1.0), step=10**9, total_steps=1) == (1.0, 1.0)
