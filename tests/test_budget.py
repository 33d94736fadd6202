"""ganforge.budget: where a preset's epochs will not fit its time budget on this kind of CPU, one line."""

from __future__ import annotations

import torch

from ganforge import precision
from ganforge.budget import CpuTiming
from ganforge.config import PRESETS, preset_config
from ganforge.training import setup

TIMING = CpuTiming(30, 13.0, 37.2)


def test_the_note_speaks_only_where_the_budget_does_not_hold():
    assert TIMING.note("p", preset_epochs=10, epochs=10, native_bf16=True) == ""  # 13 of 30 minutes
    note = TIMING.note("p", preset_epochs=10, epochs=10, native_bf16=False)
    # 37.2 minutes for 10 epochs: 8 epochs (29.8 minutes) fit 30, 9 (33.5) do not
    assert "37 min" in note and "30-minute budget" in note and "--epochs 8 fits it" in note and "\n" not in note
    assert TIMING.note("p", preset_epochs=10, epochs=8, native_bf16=False) == ""
    assert "--epochs 23 fits it" in TIMING.note("p", preset_epochs=10, epochs=24, native_bf16=True)


def test_every_budgeted_preset_is_timed_and_its_timings_are_ordered():
    budgeted = [n for n in PRESETS.names() if n.endswith("-best") or n.endswith("-dp")]
    assert budgeted and all(PRESETS.get(n).timing is not None for n in budgeted)
    for n in budgeted:
        t = PRESETS.get(n).timing
        assert 0 < t.bf16_minutes < t.avx2_minutes and t.budget_minutes in (30, 60), n


def test_training_prints_the_note_on_a_cpu_without_bf16_and_not_where_it_does_not_apply(monkeypatch):
    cfg, cpu = preset_config("mnist-best"), torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    assert "--epochs 8 fits it" in setup.budget_note(cfg, cpu)
    cfg.train.amp = "off"  # not how the preset was timed: no guess
    assert setup.budget_note(cfg, cpu) == ""
    cfg.train.amp = "auto"
    assert setup.budget_note(cfg, torch.device("cuda")) == ""
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    assert setup.budget_note(cfg, cpu) == ""
    assert setup.budget_note(preset_config("demo"), cpu) == ""  # no time budget
