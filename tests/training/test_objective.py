"""The objective apart from the loop (training/objective.py): the auxiliary classifier of AC-GAN
(Odena et al. 2017) joins D's loss on real images only and G's on the asked-for labels."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from conftest import TINY, run_cli
from ganforge.config import preset_config
from ganforge.runtime import Dist
from ganforge.training.loop import Trainer


def trainer(tmp_path, **loss) -> Trainer:
    """The demo's conditional DCGAN, narrow, on 256 digits, with an AC-GAN class head in D."""
    cfg = preset_config("demo")
    cfg.model.d_condition = "classifier"
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 256, 32, 8, 8
    cfg.train.threads, cfg.train.amp = 1, "off"
    for key, value in loss.items():
        setattr(cfg.loss, key, value)
    return Trainer(cfg, run_dir=tmp_path / "run", dist=Dist())


@pytest.mark.parametrize("weight, weight_g", [(1.0, 1.0), (30.0, 0.25)])
def test_class_head_cross_entropy_joins_d_and_g_losses(tmp_path, weight, weight_g):
    t = trainer(tmp_path, class_weight=weight, class_weight_g=weight_g)
    obj, lo, c = t.objective, t.objective.loss, t.cfg.loss
    assert obj.classify
    x, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10
    with torch.no_grad():
        d = obj.discriminator(x, labels, step=1, train_g=False, scaler=t.scaler_d)
        real, classes = t.D(x, labels, with_classes=True)
        expected = lo.d_loss(real, t.D(d.fake, labels), c) + weight * F.cross_entropy(classes, labels)
        assert torch.allclose(d.loss, expected, atol=1e-6)
        fake_logits, fake_classes = t.D(d.fake, labels, with_classes=True)
        expected_g = lo.g_loss(fake_logits, None) + weight_g * F.cross_entropy(fake_classes, labels)
        assert torch.allclose(obj.generator(x, labels, d.fake), expected_g, atol=1e-6)
    t.log.close()


def test_class_head_learns_from_real_images_only(tmp_path):
    # The head's gradient in D's step is that of the real images' cross-entropy alone: generated images
    # (labelled with what G was asked for) never teach it.
    t = trainer(tmp_path)
    x, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10
    t.D.zero_grad(set_to_none=True)
    t.objective.discriminator(x, labels, step=1, train_g=False, scaler=t.scaler_d).loss.backward()
    head = t.D.classes.linear.weight
    step_grad = head.grad.clone()
    t.D.zero_grad(set_to_none=True)
    F.cross_entropy(t.D(x, labels, with_classes=True)[1], labels).backward()
    assert torch.allclose(step_grad, head.grad, atol=1e-6) and step_grad.abs().sum() > 0
    t.log.close()


def test_a_run_with_a_class_head_trains_and_resumes(tmp_path):
    base = ["train", "--out", str(tmp_path), "--name", "r", *TINY, "--set", "model.d_condition=classifier"]
    assert run_cli([*base, "--max-steps", "3"]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "r"), "--max-steps", "5"]) == 0


def test_a_class_head_without_labels_is_refused(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path), *TINY, "--set", "model.d_condition=classifier",
            "--set", "model.conditional=false"]
    assert run_cli(argv) == 2
    assert "model.d_condition=classifier conditions D on the class" in capsys.readouterr().err


# ----------------------------------------------------------------------------- MSGAN's mode-seeking term


def test_mode_seeking_is_the_inverse_of_image_distance_per_latent_distance(tmp_path):
    t = trainer(tmp_path)
    obj = t.objective
    # a G that copies the first 4 latent coordinates, times `scale`, into a 2x2 image: the ratio of
    # mean |G(z1) - G(z2)| to mean |z1 - z2| is then about `scale` (4 of z_dim coordinates, same spread)
    for scale in (0.5, 2.0, 8.0):
        obj.g_fast = lambda z, y, s=scale: s * z[:, :4].reshape(-1, 1, 2, 2)
        torch.manual_seed(0)
        assert float(obj.mode_seeking(None, 256)) == pytest.approx(1 / scale, rel=0.15)
    obj.g_fast = lambda z, y: torch.zeros(len(z), 1, 2, 2) + 0 * z.sum()  # every latent to one image
    assert float(obj.mode_seeking(None, 256)) == pytest.approx(1e5)
    t.log.close()


def test_mode_seeking_pairs_share_a_label_and_join_g_loss_at_its_weight(tmp_path):
    t = trainer(tmp_path, mode_seeking=2.0)
    obj = t.objective
    seen = []
    g = obj.g_fast
    obj.g_fast = lambda z, y: (seen.append(y), g(z, y))[1]
    x, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10
    fake = g(torch.randn(8, t.cfg.model.z_dim), labels).detach()
    torch.manual_seed(1)
    with_term = obj.generator(x, labels, fake)
    assert torch.equal(seen[-1], labels[:4].repeat(2))  # pair i is images i and 4 + i: one label each
    torch.manual_seed(1)
    term = obj.mode_seeking(labels, 8)
    t.cfg.loss.mode_seeking = 0.0
    without = obj.generator(x, labels, fake)
    assert float(with_term) == pytest.approx(float(without + 2.0 * term), rel=1e-5)
    t.log.close()


def test_mode_seeking_costs_no_privacy(tmp_path):
    # G's term reads no real image: the same private run with and without it spends the same epsilon
    import json

    from conftest import PRIVATE

    spent = {}
    for name, weight in (("off", "0"), ("on", "1")):
        argv = ["train", "--out", str(tmp_path), "--name", name, *PRIVATE, "--set", f"loss.mode_seeking={weight}",
                "--max-steps", "3"]
        assert run_cli(argv) == 0
        spent[name] = json.loads((tmp_path / name / "privacy.json").read_text())
    assert spent["on"]["steps"] == spent["off"]["steps"] == 3
    assert spent["on"]["epsilon"] == spent["off"]["epsilon"] > 0
