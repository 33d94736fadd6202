"""benchmarks/cpu_kinds.py: a preset probed as it runs here and as an AVX2-only CPU would run it."""

from __future__ import annotations

import json

import pytest

from benchmarks.cpu_kinds import AVX2, main
from conftest import shared_path

TINY = ["--set", "data.limit=512", "--set", "model.g_channels=8", "--set", "model.d_channels=8"]


@pytest.mark.slow  # four short trainings
def test_both_kinds_are_measured_and_the_budget_follows_the_speed(tmp_path):
    record_file = tmp_path / "kinds.json"
    main(["--data", f"mnist={shared_path('mnist')}", "--presets", "mnist-best,cifar10-best", "--steps", "12",
          *TINY, "--record", str(record_file)])
    record = json.loads(record_file.read_text())
    assert set(record["presets"]) == {"mnist-best"}  # no cifar10 folder given: skipped, not failed
    native, avx2 = record["presets"]["mnist-best"]["native"], record["presets"]["mnist-best"]["avx2_fp32"]
    assert native["env"] == {} and avx2["env"] == AVX2 and "train.amp=off" in avx2["command"]
    for kind in (native, avx2):
        assert kind["images_per_s"] > 0 and kind["windows"] >= 4
        # 10 epochs (mnist-best's) of the 512 images the limit leaves, at the measured speed
        assert kind["budget_minutes"] == pytest.approx(10 * 512 / kind["images_per_s"] / 60, abs=0.06)
    assert record["machine"]["cpu"] and record["overrides"] == TINY[1::2]


def test_an_unknown_preset_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--data", "mnist=.", "--presets", "no-such-preset"])
    assert "no-such-preset" in str(exit_.value) and "\n" not in str(exit_.value)


@pytest.mark.parametrize("value", ["mnist", "mnist="])
def test_a_data_folder_without_its_dataset_is_one_line(value):
    with pytest.raises(SystemExit) as exit_:
        main(["--data", value, "--presets", "mnist-best"])
    assert f"--data {value!r}" in str(exit_.value) and "\n" not in str(exit_.value)
