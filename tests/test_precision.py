"""Mixed precision by capability, fp16 loss scaling with the gradient penalties, compile with them.

No GPU here: the CUDA capability is mocked for the choice, and fp16 autocast with a GradScaler
runs on the CPU (PyTorch supports both there), which exercises the same code the GPU runs.
"""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from ganforge import precision
from ganforge.config import preset_config, save_yaml
from ganforge.errors import ConfigError
from ganforge.runtime import Dist
from ganforge.training.loop import Trainer
from ganforge.training.losses import gradient_penalty, zero_centred_penalty

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                                  ((7, 0), "fp16"), ((7, 5), "fp16"), ((6, 1), "fp32")])
def test_auto_picks_bf16_only_where_native_and_fp16_on_older_tensor_cores(monkeypatch, capability, expected):
    monkeypatch.setattr(precision, "cuda_capability", lambda device: capability)
    chosen = precision.choose("auto", CUDA)
    assert chosen.name == expected
    assert chosen.scaled == (expected == "fp16")
    assert f"{capability[0]}.{capability[1]}" in chosen.reason


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    assert precision.choose("auto", torch.device("cpu")).name == ("bf16" if native else "fp32")


def test_explicit_choices_and_refusals():
    cpu = torch.device("cpu")
    assert precision.choose("off", cpu).dtype is None
    assert precision.choose("bf16", cpu).dtype is torch.bfloat16
    assert precision.choose("fp16", CUDA).dtype is torch.float16
    with pytest.raises(ConfigError, match="train.amp=fp16 on cpu: .*only on CUDA"):
        precision.choose("fp16", cpu)
    with pytest.raises(ConfigError, match="choose one of auto, bf16, fp16, off"):
        precision.choose("fp8", cpu)


def test_amp_fp16_on_a_cpu_is_one_line_through_the_cli(tmp_path, tiny_args, capsys):
    code = run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "1", *tiny_args,
                    "--set", "amp=fp16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "train.amp=fp16 on cpu" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


class _Critic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 1)

    def forward(self, x, labels=None):
        return self.fc(torch.tanh(self.conv(x)).flatten(1)).squeeze(1)


@pytest.mark.parametrize("penalty", ["r1", "gp"])
def test_fp16_penalties_take_the_gradient_of_the_scaled_output_and_unscale_it(penalty):
    """With a scale of 2**16 the penalty must equal the unscaled one: a missing unscale is off by 2**32."""
    torch.manual_seed(0)
    critic, x, y = _Critic(), torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    scaler.scale(torch.ones(()))  # the scale tensor exists once the scaler has scaled something

    def value(s):
        if penalty == "r1":
            xi = x.clone().requires_grad_(True)
            return zero_centred_penalty(critic(xi), xi, s)
        return gradient_penalty(critic, x, y, alpha=torch.full((6, 1, 1, 1), 0.3), scaler=s)

    plain, scaled = value(None), value(scaler)
    assert scaled.item() > 0
    torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=0)


def _tiny(loss: str = "bce", **sets) -> object:
    cfg = preset_config("demo")
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 64, 16, 8, 8
    cfg.model.conditional, cfg.model.d_norm, cfg.loss.name, cfg.train.device = False, "layer", loss, "cpu"
    for key, value in sets.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_fp16_training_with_r1_scales_skips_overflows_and_resumes_the_scaler(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "choose", lambda amp, device: precision.Precision("fp16", "test: fp16 on cpu"))
    cfg = _tiny(loss__r1_gamma=1.0, loss__r2_gamma=1.0, data__limit=256)
    trainer = Trainer(cfg, run_dir=tmp_path / "r", dist=Dist())
    assert trainer.scaler_d.is_enabled() and trainer.scaler_g.is_enabled()
    initial = [p.detach().clone() for p in trainer.D.parameters()]
    batches = trainer.batches.epoch(0)
    for _ in range(8):  # the first scales (from 2**16) overflow fp16 here: those steps are skipped, the scale halves
        trainer.train_step(*next(batches))
    assert trainer.scaler_d.get_scale() < 2.0 ** 16
    assert all(torch.isfinite(p).all() for p in trainer.D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(initial, trainer.D.parameters()))
    # A forced overflow: the step is skipped (weights unchanged) and the scale halves.
    before = [p.detach().clone() for p in trainer.D.parameters()]
    trainer.scaler_d._scale.fill_(3e38)  # any gradient times this overflows fp32
    trainer.train_step(*next(batches))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.D.parameters()))
    assert trainer.scaler_d.get_scale() == pytest.approx(1.5e38)
    trainer.scaler_d._scale.fill_(1024.0)
    # Skipped steps' infinite losses are left out of the window mean instead of forcing a rollback.
    sums, counts = trainer.window.take()
    means, _ = trainer.dist.agree(sums, counts, [torch.tensor(False)])
    assert 0 < counts["loss_d"].item() < 9
    assert torch.isfinite(torch.tensor(means["loss_d"])) and means["loss_scale_d"] > 0
    trainer.progress.step = 9
    save_yaml(cfg, tmp_path / "r" / "config.yaml")
    trainer.save()
    trainer.log.close()
    resumed = Trainer(cfg, run_dir=tmp_path / "r", resume=True, dist=Dist())
    assert resumed.scaler_d.get_scale() == 1024.0
    resumed.log.close()


@pytest.mark.parametrize("loss, sets", [("bce", {"loss__r1_gamma": 1.0}), ("bce", {"loss__r2_gamma": 1.0}),
                                        ("wgan-gp", {}), ("rpgan", {"loss__r1_gamma": 1.0, "loss__r2_gamma": 1.0})])
def test_compile_works_with_every_gradient_penalty(tmp_path, loss, sets):
    """A compiled graph has no double backward; the penalised passes run the eager D instead."""
    cfg = _tiny(loss, train__compile=True, train__compile_backend="aot_eager", **sets)
    trainer = Trainer(cfg, run_dir=tmp_path / "r", dist=Dist())
    before = [p.detach().clone() for p in trainer.D.parameters()]
    for x, labels in list(trainer.batches.epoch(0))[:2]:
        trainer.train_step(x, labels)
        trainer.progress.step += 1
    # (all but WGAN's last bias, whose gradient cancels between the real and generated means)
    changed = [not torch.equal(a, b) for a, b in zip(before, trainer.D.parameters())]
    assert sum(changed) >= len(changed) - 1
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())
    trainer.log.close()


def test_compile_with_the_same_seed_matches_eager(tmp_path):
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        cfg = _tiny(loss__r1_gamma=1.0, train__compile=compiled, train__compile_backend="aot_eager",
                    train__deterministic=True, train__threads=1, train__amp="off")
        trainer = Trainer(cfg, run_dir=tmp_path / f"r{compiled}", dist=Dist())
        x, labels = next(trainer.batches.epoch(0))
        trainer.train_step(x, labels)
        results.append([p.detach().clone() for p in trainer.G.parameters()])
        trainer.log.close()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_compile_backend_is_one_line_before_any_data_is_read(tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.compile_backend='nope': choose one of"):
        Trainer(_tiny(train__compile=True, train__compile_backend="nope"), run_dir=tmp_path / "r", dist=Dist())
    # The data folder does not exist: were the data read first, the message would name it instead.
    code = run_cli(["train", "--preset", "mnist-best", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path),
                    "--set", "train.compile=true", "--set", "train.compile_backend=nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.compile_backend='nope'" in err[0], err
    assert not (tmp_path / "mnist-best").exists()


def test_the_generator_step_computes_no_discriminator_weight_gradients(tmp_path):
    trainer = Trainer(_tiny(), run_dir=tmp_path / "r", dist=Dist())
    accumulated = {"d": 0}
    hooks = [p.register_post_accumulate_grad_hook(lambda p: accumulated.__setitem__("d", accumulated["d"] + 1))
             for p in trainer.D.parameters()]
    x, labels = next(trainer.batches.epoch(0))
    trainer.train_step(x, labels)  # n_critic 1: one D backward, then one G backward
    assert accumulated["d"] == len(list(trainer.D.parameters()))  # D's own step only, not G's
    assert all(p.requires_grad for p in trainer.D.parameters())   # unfrozen again for its next step
    for h in hooks:
        h.remove()
    trainer.log.close()
