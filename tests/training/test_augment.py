"""DiffAugment: shapes and value range kept, differentiable, and applied alike to real and fake."""

from __future__ import annotations

import pytest
import torch

from ganforge.errors import ConfigError
from ganforge.training.augment import AUGMENTS, DiffAugment, parse_policy

POLICY = "translation,cutout,color"


@pytest.mark.parametrize("name", AUGMENTS.names())
@pytest.mark.parametrize("shape", [(8, 1, 28, 28), (8, 3, 32, 32), (4, 3, 64, 64)])
def test_each_op_keeps_shape_and_range_and_changes_images(name, shape):
    torch.manual_seed(0)
    x = torch.rand(shape) * 2 - 1
    y = AUGMENTS.get(name)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.allclose(y, x)  # a random op that never changes anything would pass the rest


@pytest.mark.parametrize("name", AUGMENTS.names())
def test_each_op_is_differentiable(name):
    torch.manual_seed(1)
    x = (torch.rand(6, 3, 32, 32) * 1.6 - 0.8).requires_grad_(True)
    AUGMENTS.get(name)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_moves_pixels_and_cutout_blanks_a_square():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    torch.manual_seed(0)
    moved = AUGMENTS.get("translation")(x)
    where = (moved[:, 0] == 1).nonzero()[:, 1:]
    assert len(where) == 64  # shifts of at most 2 pixels keep it inside
    assert (where - 8).abs().max() <= 2 and (where != 8).any()
    ones = torch.ones(64, 1, 16, 16)
    blanked = AUGMENTS.get("cutout")(ones)
    zeros = (blanked == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # an 8x8 square, clipped at the border at worst


def test_the_same_draws_give_the_same_operation_for_real_and_fake():
    # The transformation depends only on the RNG, not on which images it is applied to: with one
    # seed, real and generated images get identical shifts, cut-outs and colour changes.
    aug = DiffAugment(POLICY)
    real, fake = torch.rand(8, 3, 32, 32) * 2 - 1, torch.rand(8, 3, 32, 32) * 2 - 1
    torch.manual_seed(5)
    a = aug(real)
    torch.manual_seed(5)
    b = aug(real)
    assert torch.equal(a, b)
    torch.manual_seed(5)
    mask_real = DiffAugment("cutout")(torch.ones_like(real))
    torch.manual_seed(5)
    mask_fake = DiffAugment("cutout")(torch.ones_like(fake))
    assert torch.equal(mask_real, mask_fake)


def test_policy_parsing():
    assert [op.__name__ for op in parse_policy(" translation, color ")] == ["translation", "color"]
    assert parse_policy("") == [] and not DiffAugment("")
    with pytest.raises(ConfigError, match="data.augment='flip': unknown flip; choose from color, cutout, translation"):
        parse_policy("flip")


def test_trainer_augments_every_image_d_sees(monkeypatch, tmp_path):
    """Real and fake in D's step, fake in G's step (and real again for a relativistic G loss)."""
    from ganforge.config import preset_config
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    cfg.data.limit, cfg.model.g_channels, cfg.model.d_channels = 128, 8, 8
    cfg.train.batch_size, cfg.data.augment, cfg.loss.name = 32, "translation", "rpgan"
    trainer = Trainer(cfg, run_dir=tmp_path)
    seen: list[tuple[int, bool]] = []

    def recording(x):
        seen.append((x.shape[0], x.requires_grad))
        return x

    trainer.objective.augment = recording
    x, labels = next(trainer.batches.epoch(0))
    trainer.train_step(x, labels)
    # D step: real (no grad), fake (detached); G step: real (no grad), fake (with G's graph).
    assert seen == [(32, False), (32, False), (32, False), (32, True)]
