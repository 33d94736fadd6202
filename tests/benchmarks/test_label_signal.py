"""benchmarks/label_signal.py: the label's share of D's per-image gradient, read from a run's checkpoint."""

from __future__ import annotations

import pytest
import torch

from benchmarks.label_signal import label_signal
from conftest import TINY, run_cli


def test_the_label_share_follows_the_class_weight(tmp_path):
    base = ["train", "--out", str(tmp_path), *TINY, "--set", "model.d_condition=classifier", "--max-steps", "2"]
    assert run_cli([*base, "--name", "w1"]) == 0
    assert run_cli([*base, "--name", "w50", "--set", "loss.class_weight=50"]) == 0
    one, fifty = (label_signal(tmp_path / name, images=4, test=256, probe=128) for name in ("w1", "w50"))
    assert one["adversarial_grad_norm"] > 0 and one["class_grad_norm"] > 0
    assert one["accuracy_split"] == "train" and 0 <= one["head_accuracy"] <= 1 and one["chance"] == 0.1
    assert 0 <= one["probe_accuracy"] <= 1 and one["probe_images"] == 128
    # the same weights after the same seeds' first steps differ only by the class term's weight
    share = one["class_grad_norm"] / (one["adversarial_grad_norm"] + one["class_grad_norm"])
    assert one["class_share"] == pytest.approx(share)
    assert fifty["class_share"] > one["class_share"]
    # G's side: the class term's gradient scales with class_weight_g, the adversarial one does not see it
    assert one["g_adversarial_grad_norm"] > 0 and one["g_class_grad_norm"] > 0
    assert 0 <= one["generated_head_accuracy"] <= 1 and one["generated_variety"] > 0


def test_g_class_gradient_scales_with_class_weight_g(tmp_path):
    base = ["train", "--out", str(tmp_path), *TINY, "--set", "model.d_condition=classifier", "--max-steps", "1"]
    assert run_cli([*base, "--name", "g1"]) == 0
    assert run_cli([*base, "--name", "g3", "--set", "loss.class_weight_g=3"]) == 0
    one, three = (label_signal(tmp_path / name, images=4, test=64, probe=0) for name in ("g1", "g3"))
    # one step of G at a different weight changes G slightly; the gradient's scale follows the weight
    assert three["g_class_grad_norm"] / one["g_class_grad_norm"] == pytest.approx(3, rel=0.3)


def test_a_projection_d_is_read_as_a_classifier_and_an_unconditional_run_is_one_line(tmp_path):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "p", *TINY, "--max-steps", "1"]) == 0
    r = label_signal(tmp_path / "p", images=4, test=64, probe=128)
    assert not r["has_head"] and r["class_grad_norm"] is None and r["class_share"] is None
    assert r["g_class_grad_norm"] is None and r["adversarial_grad_norm"] > 0 and r["g_adversarial_grad_norm"] > 0
    assert 0 <= r["head_accuracy"] <= 1 and 0 <= r["generated_head_accuracy"] <= 1 and 0 <= r["probe_accuracy"] <= 1
    assert run_cli(["train", "--out", str(tmp_path), "--name", "u", *TINY, "--max-steps", "1",
                    "--set", "model.conditional=false"]) == 0
    with pytest.raises(SystemExit, match="unconditional"):
        label_signal(tmp_path / "u")


def test_a_projection_d_reads_the_label_through_its_class_embedding():
    from benchmarks.label_signal import class_scores
    from ganforge.models.dcgan import DCGANDiscriminator

    d = DCGANDiscriminator(channels=1, size=28, width=8, num_classes=10, norm="layer").eval()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = class_scores(d, x, 10)  # [6, 10]
        features = d.features(x).sum(dim=(2, 3))  # phi(x), [6, ch]
        # the unconditional part of the logit is the same for every label: only <embed(y), phi(x)> differs
        expected = features @ (d.project.embed.weight - d.project.embed.weight[0]).T
    assert scores.shape == (6, 10)
    assert torch.allclose(scores - scores[:, :1], expected, atol=1e-4)


def test_the_linear_probe_reads_separable_features_and_not_random_labels():
    from benchmarks.label_signal import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (2000,), generator=g)
    centres = torch.randn(10, 16, generator=g) * 3
    f = centres[y] + torch.randn(2000, 16, generator=g)  # ten well-separated clusters
    assert linear_probe(f[:1500], y[:1500], f[1500:], y[1500:]) > 0.95
    noise = torch.randn(2000, 16, generator=g)  # features that know nothing of the labels
    assert linear_probe(noise[:1500], y[:1500], noise[1500:], y[1500:]) < 0.2


def test_within_class_distance_is_zero_for_copies_and_grows_with_spread():
    from benchmarks.label_signal import within_class_distance

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(8)  # 8 images of each of 4 classes
    copies = torch.randn(4, 1, 6, 6, generator=g)[labels]  # one image per class
    assert within_class_distance(copies, labels) == pytest.approx(0, abs=1e-4)
    spread = copies + torch.randn(32, 1, 6, 6, generator=g)
    wider = copies + 3 * torch.randn(32, 1, 6, 6, generator=g)
    assert 0 < within_class_distance(spread, labels) < within_class_distance(wider, labels)
