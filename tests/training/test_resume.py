"""What a resume may change (the architecture, optimizer and preset never; what changes the meaning of
the saved position, such as the seed, the data or the process count, only with --allow-change):
refused with one line before anything is written, or allowed explicitly and recorded; `--resume auto`
picks by the checkpoints' own time."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import TINY, run_cli
from ganforge.config import preset_config
from ganforge.training.checkpoint import list_checkpoints, save_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of a tiny run (8 steps); each test continues its own copy."""
    out = tmp_path_factory.mktemp("trained")
    assert run_cli(["train", "--out", str(out), "--name", "r", *TINY, "--epochs", "1"]) == 0
    return out / "r"


@pytest.fixture
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "r")
    return tmp_path / "r"


def snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("flags, key", [
    (["--set", "optim.name=sgd"], "optim.name"),
    (["--set", "model.z_dim=64"], "model.z_dim"),
    (["--set", "model.g_channels=16"], "model.g_channels"),
    (["--set", f"model.conditional={not preset_config('demo').model.conditional}"], "model.conditional"),
    (["--preset", "mnist-dcgan"], "preset"),
])
def test_a_resume_cannot_change_architecture_optimizer_or_preset(run, capsys, flags, key):
    before = snapshot(run)
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ganforge: error: --resume {run}: {key} was ")  # not a state_dict dump
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", *flags, "--allow-change"]) == 2  # not even so
    assert snapshot(run) == before  # config.yaml, metrics.jsonl, checkpoints: nothing written
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 0  # a plain resume still works


@pytest.mark.parametrize("flags, key, old, new", [
    (["--batch-size", "16"], "train.batch_size", 32, 16),
    (["--seed", "7"], "train.seed", 0, 7),
    (["--set", "data.limit=128"], "data.limit", 256, 128),
])
def test_a_resume_that_changes_the_positions_meaning_needs_allow_change(run, capsys, flags, key, old, new):
    before = snapshot(run)
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{key} was {old!r}, now {new!r}" in err and "--allow-change" in err
    assert snapshot(run) == before
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", *flags, "--allow-change"]) == 0
    events = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if '"event"' in s]
    assert events == [{"step": 8, "event": "resume", "changed": {"train.epochs": [1, 2], key: [old, new]}}]
    assert f"{key.split('.')[1]}: {new}" in (run / "config.yaml").read_text()


def test_unwritable_out_is_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert run_cli(["train", "--out", str(tmp_path / "a-file" / "runs"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ganforge: error: --out {tmp_path / 'a-file' / 'runs'}: cannot write")


def test_resume_auto_picks_the_newest_checkpoint_not_the_newest_folder(tmp_path):
    from ganforge.training.resume import latest_run_dir

    for name, written in (("r", 2000), ("r-2", 1000)):
        path = save_checkpoint(tmp_path / name, step=5, tensors={"w": torch.zeros(1)}, state={}, keep=1)
        os.utime(path / "state.pt", (written, written))
    (tmp_path / "r-2" / "eval.json").write_text("{}")  # an evaluation of the older run touches its folder
    os.utime(tmp_path / "r-2", (3000, 3000))
    os.utime(tmp_path / "r", (500, 500))
    assert latest_run_dir(tmp_path, "r") == tmp_path / "r"
    assert latest_run_dir(tmp_path, "nothing") is None


def test_a_resume_with_another_number_of_processes_needs_allow_change(run, capsys):
    ckpt = list_checkpoints(run)[-1]
    state = torch.load(ckpt / "state.pt", weights_only=True)
    torch.save(dict(state, world_size=2, rng=state["rng"] * 2), ckpt / "state.pt")  # as if from 2 torchrun ranks
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "it was trained by 2 processes, now 1" in capsys.readouterr().err
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", "--allow-change"]) == 0
    events = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if '"event"' in s]
    assert events[0]["changed"]["world_size"] == [2, 1]
