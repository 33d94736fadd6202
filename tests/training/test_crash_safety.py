"""Crash safety: SIGKILL then resume is exact, SIGINT checkpoints, bad checkpoints fall back,
NaNs roll back, hostile pickles are refused, a full disk keeps the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import EXACT, poison_d_loss, run_cli
from conftest import TINY as TINY_256
from ganforge.config import preset_config
from ganforge.errors import CheckpointError
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint, load_latest, save_checkpoint

TINY = [*TINY_256, "--set", "data.limit=512", *EXACT]  # 16 steps an epoch


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run)[-1])[0]


def spawn(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "ganforge", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training subprocess")
        time.sleep(0.05)


@pytest.mark.slow  # subprocesses killed and resumed
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    flags = [*TINY, "--epochs", "2", "--set", "train.checkpoint_steps=3"]
    assert run_cli(["train", "--out", str(tmp_path), "--name", "whole", *flags]) == 0

    run = tmp_path / "killed"
    proc = spawn(["--out", str(tmp_path), "--name", "killed", *flags])
    # Kill once a mid-epoch checkpoint (16 steps an epoch; 9 is inside epoch 1) exists.
    wait_for(lambda: (run / "checkpoints" / "step_000000009").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "step_000000032").exists()
    assert run_cli(["train", "--resume", str(run)]) == 0

    a, b = final_weights(tmp_path / "whole"), final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # subprocesses signalled
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_exits_with_the_signal_code(tmp_path, signum, code):
    """A stopped run must not look finished to `train && eval`: 128 + the signal, as a shell reports it."""
    run = tmp_path / "r"
    proc = spawn(["--out", str(tmp_path), "--name", "r", *TINY, "--epochs", "50"])
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0, proc)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out
    name = signal.Signals(signum).name
    assert f"stopped: received {name} at step" in out and f"resume with: ganforge train --resume {run}" in out
    _, state = load_checkpoint(list_checkpoints(run)[-1])
    assert f"stopped: received {name} at step {state['progress']['step']} " in out  # the final checkpoint


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--epochs", "2"]) == 0
    run = tmp_path / "r"
    *_, previous, latest = list_checkpoints(run)
    weights = latest / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.warns(UserWarning, match=f"skipping bad checkpoint: {weights}: checksum mismatch"):
        path, _, state = load_latest(run)
    assert path == previous
    with pytest.warns(UserWarning, match="skipping bad checkpoint"):
        assert run_cli(["train", "--resume", str(run)]) == 0  # resumes from the previous one, redoes epoch 2


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "checkpoints" / "step_000000001"
    ckpt.mkdir(parents=True)
    save_checkpoint(tmp_path, step=1, tensors={"w": torch.zeros(2)}, state={}, keep=2, name="step_000000001")
    with open(ckpt / "state.pt", "wb") as f:
        pickle.dump({"weights_sha256": "x", "evil": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="not a valid ganforge state file"):
        load_checkpoint(ckpt)
    assert not (tmp_path / "pwned").exists()


def test_nan_loss_rolls_back_and_lowers_lr(tmp_path, monkeypatch):
    poison_d_loss(monkeypatch, 12)  # once, in epoch 2
    with pytest.warns(UserWarning, match="non-finite loss or weight at step 12.*rolled back to step_000000008"):
        assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY[:-4], "--set", "data.limit=256",
                        "--epochs", "2"]) == 0
    _, state = load_checkpoint(list_checkpoints(tmp_path / "r")[-1])
    assert state["progress"]["rollbacks"] == 1 and state["progress"]["lr_scale"] == 0.5
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(preset_config("demo").optim.lr_d * 0.5)
    assert all(torch.isfinite(t).all() for t in final_weights(tmp_path / "r").values())


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, step=1, tensors={"w": torch.ones(3)}, state={"a": 1}, keep=3)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ganforge.training.checkpoint.save_file", no_space)
    with pytest.raises(CheckpointError,
                       match=r"\(No space left on device\); the previous checkpoint step_000000001 is intact"):
        save_checkpoint(tmp_path, step=2, tensors={"w": torch.zeros(3)}, state={"a": 2}, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000000001"]
    assert torch.equal(load_checkpoint(tmp_path / "checkpoints" / "step_000000001")[0]["w"], torch.ones(3))
