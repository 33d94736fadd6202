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


def test_a_run_without_a_class_head_is_one_line(tmp_path):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--max-steps", "1"]) == 0
    with pytest.raises(SystemExit, match="no class head"):
        label_signal(tmp_path / "r")


def test_the_linear_probe_reads_separable_features_and_not_random_labels():
    from benchmarks.label_signal import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (2000,), generator=g)
    centres = torch.randn(10, 16, generator=g) * 3
    f = centres[y] + torch.randn(2000, 16, generator=g)  # ten well-separated clusters
    assert linear_probe(f[:1500], y[:1500], f[1500:], y[1500:]) > 0.95
    noise = torch.randn(2000, 16, generator=g)  # features that know nothing of the labels
    assert linear_probe(noise[:1500], y[:1500], noise[1500:], y[1500:]) < 0.2
