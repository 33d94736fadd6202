"""DP-SGD on the discriminator (training/privacy.py): the ledger against Opacus's own accountant, per-sample
clipping, the noise's scale, the generated term (clipped, never noised), resume, the budget stop and the refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from conftest import EXACT, PRIVATE, d_grad, run_cli
from conftest import private_trainer as trainer
from ganforge.config import preset_config
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint
from ganforge.training.dsteps import DSteps
from ganforge.training.loop import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:privacy.sampling_seed", "ignore:Full backward hook is firing",
                                        "ignore:Optimal order is the largest alpha")

def records(run):
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if s.strip()]


def test_reported_epsilon_is_opacus_accountant_for_the_same_q_sigma_and_steps(tmp_path):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--epochs", "2", *PRIVATE]) == 0
    run = tmp_path / "r"
    q, steps = 32 / 256, 16
    sigma = get_noise_multiplier(target_epsilon=10.0, target_delta=1e-3, sample_rate=q, steps=steps)
    saved = json.loads((run / "privacy.json").read_text())
    assert saved["noise_multiplier"] == sigma and saved["sample_rate"] == q
    assert f"noise_multiplier: {sigma}" in (run / "config.yaml").read_text()  # config.yaml records sigma
    accountant = RDPAccountant()
    logged = {r["step"]: r["epsilon"] for r in records(run) if "epsilon" in r}
    for step in range(1, steps + 1):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
        if step in logged:
            assert logged[step] == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9), step
    assert sorted(logged)[-1] == 16 and 0 < logged[16] <= 10.0
    # Nothing of the real batches is logged, and no training image is published.
    assert not any("d_real" in r or "loss_d" in r for r in records(run))
    assert not (run / "samples" / "real.png").exists() and (run / "samples" / "epoch_0002.png").is_file()
    _, state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["privacy"]["ledger"]["accountant"]["history"] == [(sigma, q, 16)]


def test_one_enormous_gradient_moves_the_sum_by_at_most_the_clipping_norm(tmp_path):
    t = trainer(tmp_path, max_grad_norm=0.5)
    t.private.dp.noise_multiplier = 0.0  # the noise-free part of the step
    x, labels = next(t.batches.epoch(0))
    assert x.shape[0] > 1 and labels is not None
    wild = x.clone()
    wild[0] *= 1e4  # one image far outside [-1, 1]: its gradient is enormous
    sums = []
    for batch, y in ((wild, labels), (x[1:], labels[1:])):
        t.private.dp.zero_grad(set_to_none=True)
        t.private.real_term(batch, y)
        if batch is wild:
            norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in t.D.parameters()]).norm(dim=0)
            assert norms[0] > 100 * 0.5  # clipping has something to do
        t.private.dp.pre_step()
        sums.append(d_grad(t) * t.private.plan.expected_batch_size)
    assert (sums[0] - sums[1]).norm() <= 0.5 * (1 + 1e-4)
    assert (sums[0] - sums[1]).norm() > 0.4  # the wild image's gradient, clipped to about C, is there
    t.log.close()


def test_noise_has_the_configured_scale(tmp_path):
    t = trainer(tmp_path, max_grad_norm=2.0)
    t.private.dp.zero_grad(set_to_none=True)
    t.private.real_term(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))  # no image: zero gradient
    t.private.dp.pre_step()
    plan, g = t.private.plan, d_grad(t)
    assert g.numel() > 3000
    expected = plan.noise_multiplier * 2.0 / plan.expected_batch_size
    assert g.mean().abs() < 4 * expected / math.sqrt(g.numel())
    assert g.std().item() == pytest.approx(expected, rel=0.08)
    t.log.close()


def generated_step(t: Trainer, monkeypatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One private D step on an empty real batch without noise: (D's update, the fakes, their labels)."""
    t.private.dp.noise_multiplier = 0.0
    seen = {}
    monkeypatch.setattr(t.private.dp.original_optimizer, "step", lambda *a, **k: seen.update(grad=d_grad(t)))
    empty = torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)
    fake, fake_labels, _ = t.private.step(*empty, train_g=False)
    assert fake_labels is not None and fake.shape[0] == 32  # the expected batch size, uniform labels
    assert t.private.ledger.steps == 1  # one subsampled mechanism counted, at the real images' rate only
    return seen["grad"], fake.detach(), fake_labels


def per_image_grad(t: Trainer, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """D's gradient of the generated term for one image alone, by plain autograd (no Opacus)."""
    t.D.zero_grad(set_to_none=True)
    logits = t.D(x[None], label[None]).float()
    t.objective.loss.d_loss(logits.detach(), logits, t.cfg.loss).backward()
    return d_grad(t)


def test_the_generated_term_is_clipped_per_image_and_unnoised(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_grad_norm=1e-3)
    grad, fake, labels = generated_step(t, monkeypatch)
    clipped = []
    for x, y in zip(fake, labels):
        g = per_image_grad(t, x, y)
        assert g.norm() > 1e-3  # every image's gradient is beyond C, so every one is clipped
        clipped.append(g * (1e-3 / (g.norm() + 1e-6)))  # Opacus's clip factor: C / (norm + 1e-6)
    expected = torch.stack(clipped).mean(0)
    assert (grad - expected).norm() <= 1e-4 * expected.norm()
    assert grad.norm() <= 1e-3 * (1 + 1e-5)  # the mean of vectors of norm C
    t.log.close()


@pytest.mark.parametrize("d_condition", ["projection", "input", "classifier"])
def test_per_sample_gradients_of_the_real_term_are_each_images_own(tmp_path, d_condition):
    # Opacus's convolution per-sample gradients misread channels_last activations (relative error 0.9
    # measured), and channels_last is the default layout: a private D must stay contiguous. The
    # label maps' embedding has Opacus's own per-sample rule, checked here like the rest; the class
    # head's cross-entropy must ride in each image's own gradient.
    t = trainer(tmp_path, d_condition)
    assert t.cfg.train.channels_last
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    labels = torch.arange(6)
    t.private.dp.zero_grad(set_to_none=True)
    t.private.real_term(x, labels)
    per_sample = torch.cat([p.grad_sample.reshape(6, -1) for p in t.D.parameters()], 1)  # pyright: ignore
    for i in range(6):
        t.D.zero_grad(set_to_none=True)
        logits, class_loss = t.objective.judge(t.D, x[i:i + 1], labels[i:i + 1], weight=1.0)
        (t.objective.loss.d_loss(logits, logits.detach(), t.cfg.loss) + class_loss).backward()
        assert (per_sample[i] - d_grad(t)).norm() <= 1e-5 * d_grad(t).norm()
    if d_condition == "classifier":  # the head learnt from the labels: its gradient is not zero
        assert t.D.classes.linear.weight.grad_sample.abs().sum() > 0  # pyright: ignore
    t.log.close()


def test_a_class_head_learns_nothing_from_generated_images(tmp_path, monkeypatch):
    # AC-GAN's head is trained on real images only (objective.py); its per-sample gradients of the
    # generated term are zeros, present because Opacus's clipping asks one of every parameter.
    t = trainer(tmp_path, "classifier")
    t.private.dp.zero_grad(set_to_none=True)
    fake, labels = torch.rand(6, 1, 28, 28) * 2 - 1, torch.arange(6)
    t.private.real_term(fake[:0], labels[:0])  # an empty real batch: the generated term alone
    t.private.dp.pre_step()
    t.private.generated_term(fake, labels)
    head = t.D.classes.linear.weight
    assert head.grad_sample is not None and head.grad_sample.abs().sum() == 0  # pyright: ignore
    t.log.close()


def test_the_generated_term_is_added_unclipped_when_asked(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_grad_norm=1e-6, clip_generated=False)
    grad, fake, labels = generated_step(t, monkeypatch)
    t.D.zero_grad(set_to_none=True)
    logits = t.D(fake, labels).float()
    t.objective.loss.d_loss(logits.detach(), logits, t.cfg.loss).backward()
    assert torch.allclose(grad, d_grad(t), atol=1e-7)
    assert grad.norm() > 1e3 * 1e-6  # far beyond the clipping norm: not clipped
    t.log.close()


def test_training_stops_before_the_budget_is_exceeded(tmp_path):
    t = trainer(tmp_path)
    t.private.plan = dataclasses.replace(t.private.plan, budget_steps=5)
    verdict = t.run()
    assert verdict.stop.startswith("privacy budget spent") and verdict.exit_code == 0
    assert t.progress.step == 5 and t.private.ledger.steps == 5
    assert json.loads((tmp_path / "run" / "privacy.json").read_text())["steps"] == 5


def test_resume_continues_the_ledger_exactly_and_refuses_beyond_the_budget(tmp_path, capsys):
    flags = [*PRIVATE, *EXACT, "--epochs", "2"]
    assert run_cli(["train", "--out", str(tmp_path), "--name", "whole", *flags]) == 0
    assert run_cli(["train", "--out", str(tmp_path), "--name", "split", *flags, "--max-steps", "5"]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "split"), "--max-steps", "16"]) == 0
    a, sa = load_checkpoint(list_checkpoints(tmp_path / "whole")[-1])
    b, sb = load_checkpoint(list_checkpoints(tmp_path / "split")[-1])
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    assert sa["privacy"] == sb["privacy"]
    eps = [{r["step"]: r["epsilon"] for r in records(tmp_path / n) if "epsilon" in r} for n in ("whole", "split")]
    assert eps[1][16] == eps[0][16]
    capsys.readouterr()
    assert run_cli(["train", "--resume", str(tmp_path / "whole"), "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "beyond privacy.epsilon=10" in err, err
    assert run_cli(["train", "--resume", str(tmp_path / "whole"), "--epochs", "3", "--set", "privacy.epsilon=20"]) == 2
    assert "a private run's noise was planned" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--set", "model.d_norm=batch"], "the discriminator has batch norm (model.d_norm=batch"),
    (["--set", "loss.name=wgan-gp"], "penalise the gradient with respect to each real image"),
    (["--set", "loss.r1_gamma=1"], "penalise the gradient with respect to each real image"),
    (["--set", "loss.name=rpgan"], "loss.name=rpgan pairs every generated logit with a real one"),
    (["--set", "train.compile=true"], "train.compile=true"),
    (["--set", "train.amp=bf16"], "train.amp=bf16 is not supported"),
    (["--set", "model.d_sn=true"], "model.d_sn=true"),
    (["--set", "model.d_mbstd=4"], "model.d_mbstd mixes the images of a batch"),
    (["--set", "train.eval_every=1"], "train.eval_every / train.eval_every_kimg"),
    (["--set", "data.augment=translation", "--set", "data.ada_target=0.6"], "data.ada_target tunes the augmentation"),
    (["--set", "privacy.delta=0.01"], "privacy.delta=0.01 must be below 1/N = 0.00391 for the 256 training images"),
    (["--batch-size", "256"], "train.batch_size=256 must be below the 256 training images of a private run"),
    (["--set", "privacy.noise_multiplier=0.1"], "privacy.noise_multiplier=0.1 spends epsilon="),
    (["--set", "privacy.accountant=gdp"], "privacy.accountant='gdp': choose rdp or prv"),
    (["--set", "privacy.adaptive_d_steps=true", "--set", "loss.n_critic=3"], "not on Bie et al.'s ladder"),
])
def test_each_refusal_is_one_line_before_training(flags, message, tmp_path, capsys):
    assert run_cli(["train", "--out", str(tmp_path), *PRIVATE, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(tmp_path.rglob("metrics.jsonl")), "training started"


def test_the_ledger_never_goes_back_and_its_batches_follow_it(tmp_path):
    t = trainer(tmp_path)
    ledger, batches = t.private.ledger, t.batches.epoch(0)
    saved = dict(ledger.state_dict())
    first, _ = next(batches)
    sizes = []
    for _ in range(6):
        ledger.step()
        sizes.append(next(batches)[0].shape[0])
    assert len(set(sizes)) > 1  # Poisson sampling: the batch size varies
    ledger.load_state_dict(saved)  # a rollback to a checkpoint before those steps keeps them counted
    assert ledger.steps == 6
    again, _ = next(batches)
    assert again.shape != first.shape or not torch.equal(again, first)  # a fresh draw, not a replay
    other = trainer(tmp_path / "other")
    other.private.ledger.load_state_dict(ledger.state_dict())  # a resume takes the checkpoint's ledger and secret
    fresh = other.private.ledger
    assert fresh.steps == 6 and fresh.secret == ledger.secret and fresh.seed(1) == ledger.seed(1)
    t.log.close()
    other.log.close()


def test_more_than_one_process_is_refused():
    from ganforge.errors import ConfigError
    from ganforge.training.privacy import check_config

    cfg = preset_config("mnist-dp")
    check_config(cfg, 1)
    with pytest.raises(ConfigError, match=r"^privacy.enabled=true runs on one process; torchrun started 2"):
        check_config(cfg, 2)


def test_adaptive_schedule_climbs_bie_et_al_ladder_on_d_accuracy_for_generated_images():
    s = DSteps(2, adaptive=True, threshold=0.7, grace=3, beta=0.5)
    fooled, caught = torch.ones(8), -torch.ones(8)  # logits > 0: D calls the fakes real (accuracy 0)
    for _ in range(3):  # D accurate on the fakes: stays at 2
        assert not s.g_step_due()
        s.d_step(caught, train_g=False)
        assert s.g_step_due()
        s.d_step(caught, train_g=True)
    assert s.rate == 2 and s.ema == 1.0
    s.d_step(fooled, train_g=True)  # the average falls to 0.5 after the grace period: up one notch
    assert s.rate == 5 and s.g_steps == 0 and s.ema == 0.5
    for _ in range(2):  # a new grace period at 5 before the next notch
        s.d_step(fooled, train_g=True)
    assert s.rate == 5
    s.d_step(fooled, train_g=True)
    assert s.rate == 10
    copy = DSteps(2, adaptive=True)
    copy.load_state_dict(s.state_dict())
    assert copy.state_dict() == s.state_dict()


def test_other_commands_carry_epsilon_delta_and_accountant(tmp_path):
    from ganforge.outputs.export import metadata
    from ganforge.outputs.model import load_model
    from ganforge.outputs.report import render
    from ganforge.outputs.runs import read_run
    from ganforge.outputs.sampling import sample

    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "3", *PRIVATE]) == 0
    run = tmp_path / "r"
    model = load_model(run)
    info = json.loads(metadata(model)["privacy"])
    assert (info["delta"], info["accountant"]) == (1e-3, "rdp") and 0 < info["epsilon"] < 10
    out = sample(model, n=4, out=tmp_path / "imgs", show_progress=False)
    assert json.loads((out / "privacy.json").read_text())["epsilon"] == info["epsilon"]
    assert "differentially private: epsilon" in render(read_run(run))
    assert run_cli(["eval", str(run), "--metrics", "cls-fid", "--n", "64"]) == 0
    assert json.loads((run / "eval.json").read_text())["privacy"] == info
    pytest.importorskip("gradio")
    from ganforge.outputs.webapp import build_app

    app, _, _ = build_app(model, out_dir=tmp_path / "serve")
    (about,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "about"]
    assert "differentially private: epsilon" in about.value and "delta 0.001 (rdp accountant" in about.value


def test_the_memory_estimate_counts_the_per_sample_gradients_opacus_holds(tmp_path):
    from ganforge.training import capacity

    t = trainer(tmp_path)
    x, labels = torch.rand(32, 1, 28, 28) * 2 - 1, torch.arange(32) % 10
    t.private.dp.zero_grad(set_to_none=True)
    t.private.real_term(x, labels)
    held = sum(p.grad_sample.numel() * 4 for p in t.D.parameters())  # pyright: ignore[reportAttributeAccessIssue]
    private = capacity.estimate(t.cfg, 1, 28, 10).activation_bytes
    t.cfg.privacy.enabled = False
    public = capacity.estimate(t.cfg, 1, 28, 10).activation_bytes
    assert private is not None and public is not None
    assert held <= private - public <= 3 * held
    t.log.close()
