"""Clipping the label apart (training/dp_clipping.py, `privacy.label_clip`): each group of D's parameters
clipped to its own norm, the norms' squares adding up to C^2, and the noise that of one norm C."""

from __future__ import annotations

import pytest
import torch

from conftest import PRIVATE, d_grad, run_cli
from conftest import private_trainer as trainer
from ganforge.models.common import label_parameters
from ganforge.training.privacy import split_norm

pytestmark = pytest.mark.filterwarnings("ignore:privacy.sampling_seed", "ignore:Full backward hook is firing",
                                        "ignore:Optimal order is the largest alpha")


@pytest.mark.parametrize("d_condition", ["classifier", "projection"])
def test_each_group_is_clipped_to_its_own_norm_and_the_whole_to_c(tmp_path, d_condition):
    t = trainer(tmp_path, d_condition=d_condition, max_grad_norm=0.01, label_clip=0.25)
    dp = t.private.dp
    dp.noise_multiplier = 0.0  # the noise-free part of the step
    labelled = {id(p) for p in label_parameters(t.D)}
    assert labelled and len(labelled) < len(dp.params)
    x, labels = next(t.batches.epoch(0))
    dp.zero_grad(set_to_none=True)
    t.private.real_term(x, labels)
    per_image = {id(p): p.grad_sample.clone() for p in dp.params}  # Opacus's per-sample gradients, [B, ...]
    dp.pre_step()
    rest_c, label_c = split_norm(0.01, 0.25)
    assert (rest_c, label_c) == pytest.approx((0.01 * 0.75**0.5, 0.005))
    expected, label_norms = [], []
    for group, c in ((False, rest_c), (True, label_c)):
        params = [p for p in dp.params if (id(p) in labelled) == group]
        flat = torch.cat([per_image[id(p)].flatten(1) for p in params], dim=1)  # [B, parameters of the group]
        norms = flat.norm(dim=1)
        assert (norms > c).all(), "every image is clipped in every group: the test has something to check"
        if group:
            label_norms = norms
        clipped = flat * (c / (norms + 1e-6))[:, None]
        expected.append((params, clipped.sum(0) / t.private.plan.expected_batch_size))
    for params, want in expected:
        got = torch.cat([p.grad.flatten() for p in params])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-9)
    # The whole per-image gradient stays within C; the noise is drawn for C.
    assert dp.max_grad_norm == pytest.approx(0.01)
    assert d_grad(t).norm() * t.private.plan.expected_batch_size <= x.shape[0] * 0.01 * (1 + 1e-4)
    assert label_norms.numel() == x.shape[0]
    t.log.close()


def test_without_label_clip_one_norm_clips_all_of_d(tmp_path):
    from opacus.optimizers import DPOptimizer

    from ganforge.training.dp_clipping import GroupClippedDPOptimizer

    t = trainer(tmp_path, d_condition="classifier")
    assert type(t.private.dp) is DPOptimizer and not isinstance(t.private.dp, GroupClippedDPOptimizer)
    t.log.close()


def test_the_noise_is_that_of_one_norm_c(tmp_path):
    t = trainer(tmp_path, d_condition="classifier", max_grad_norm=2.0, label_clip=0.5)
    t.private.dp.zero_grad(set_to_none=True)
    t.private.real_term(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))  # no image: the noise alone
    t.private.dp.pre_step()
    plan, g = t.private.plan, d_grad(t)
    assert g.std().item() == pytest.approx(plan.noise_multiplier * 2.0 / plan.expected_batch_size, rel=0.08)
    t.log.close()


def test_a_private_run_with_the_label_clipped_apart_trains_and_records_it(tmp_path):
    argv = ["train", "--out", str(tmp_path), "--name", "r", "--epochs", "1", *PRIVATE, "--set",
            "model.conditional=true", "--set", "model.d_condition=classifier", "--set", "privacy.label_clip=0.25",
            "--set", "optim.lr_d_label=10"]
    assert run_cli(argv) == 0
    assert "label_clip: 0.25" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--set", "privacy.label_clip=1"], "privacy.label_clip must be in [0, 1)"),
    (["--set", "privacy.label_clip=0.3"], "privacy.label_clip=0.3: this discriminator has no parameters of its own"),
])
def test_label_clip_refusals_are_one_line(flags, message, tmp_path, capsys):
    assert run_cli(["train", "--out", str(tmp_path), *PRIVATE, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_label_parameters_learn_at_their_own_multiple_of_lr_d(tmp_path):
    from ganforge.training.optim import set_learning_rate
    from ganforge.training.setup import optimizers

    t = trainer(tmp_path, d_condition="classifier", label_clip=0.25)
    t.cfg.optim.lr_d_label = 10.0
    _, opt_d = optimizers(t.cfg, t.G, t.D, torch.device("cpu"))
    rest, label = opt_d.param_groups
    assert [id(q) for q in label["params"]] == [id(q) for q in label_parameters(t.D)]
    assert label["lr"] == pytest.approx(10 * rest["lr"]) and rest["lr"] == t.cfg.optim.lr_d
    set_learning_rate(opt_d, 1e-5)  # the schedule's rate for D: the label's group keeps its multiple
    assert (rest["lr"], label["lr"]) == pytest.approx((1e-5, 1e-4))
    t.log.close()
