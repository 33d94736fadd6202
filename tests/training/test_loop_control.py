"""The loop's control flow: health checks return verdicts, the loop acts on them in one place, and a
window without a generator step has no G loss (no number is logged that no step computed)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import TINY, poison_d_loss, run_cli
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint
from ganforge.training.health import HealthGuard


def records(run):
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]


def test_window_without_generator_step_has_no_g_loss(tmp_path):
    # n_critic=5: G learns at steps 5 and 10; windows end at 3 (no G step), 6, and 7 (max_steps, no G step).
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--set", "loss.n_critic=5",
                    "--set", "train.log_every=3", "--max-steps", "7"]) == 0
    rows = records(tmp_path / "r")
    assert [(r["step"], "loss_g" in r) for r in rows] == [(3, False), (6, True), (7, False)]  # no rollback events
    assert all(math.isfinite(v) for r in rows for v in r.values())
    _, state = load_checkpoint(list_checkpoints(tmp_path / "r")[-1])
    assert state["progress"]["step"] == 7 and state["progress"]["rollbacks"] == 0  # the final checkpoint


def test_health_check_returns_a_verdict():
    guard = HealthGuard(loss_has_probabilities=True)
    assert guard.check({"step": 3, "loss_d": 1.2, "d_real": 0.6, "d_fake": 0.4}, weights_finite=True) == ""
    assert "at step 4 (loss_d=nan)" in guard.check({"step": 4, "loss_d": math.nan}, weights_finite=True)
    assert "at step 5" in guard.check({"step": 5, "loss_d": 1.0, "loss_g": 2.0}, weights_finite=False)


def test_nan_at_an_epoch_end_rolls_back_instead_of_escaping(tmp_path, monkeypatch):
    """Non-finite weights found by the end-of-epoch save used to raise Rollback out of the loop."""
    poison_d_loss(monkeypatch, 8)  # the last step of epoch 1
    with pytest.warns(UserWarning, match="non-finite loss or weight at step 8.*rolled back to step_000000000"):
        assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--set", "train.log_every=3",
                        "--epochs", "2"]) == 0
    _, state = load_checkpoint(list_checkpoints(tmp_path / "r")[-1])
    assert state["progress"]["step"] == 16 and state["progress"]["rollbacks"] == 1
    assert [r["event"] for r in records(tmp_path / "r") if "event" in r] == ["rollback"]


def test_a_full_disk_while_logging_is_one_line_and_keeps_the_checkpoints(tmp_path, monkeypatch, capsys):
    from ganforge.training.artifacts import RunLog

    real_log, calls = RunLog.log, {"n": 0}

    def log(self, record):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device", str(self.metrics_path))
        real_log(self, record)

    monkeypatch.setattr(RunLog, "log", log)
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ganforge: error: cannot write {tmp_path / 'r' / 'metrics.jsonl'} (No space left on device); "
                   f"free space, then resume from the last checkpoint: --resume {tmp_path / 'r'}"]
    monkeypatch.setattr(RunLog, "log", real_log)
    assert run_cli(["train", "--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0
