"""Atomic writes and the run-folder lock: a killed writer leaves the old file or the new one, and two
trainings never share a run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli
from ganforge.errors import CheckpointError
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint


def test_temporary_names_are_unique_per_writer(tmp_path):
    from ganforge import fsutil

    names = {fsutil.temp_path(tmp_path / "eval.json") for _ in range(100)}
    assert len(names) == 100 and all(f"-{os.getpid()}-" in n.name and n.suffix == ".json" for n in names)


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    from ganforge import fsutil

    target, errors = tmp_path / "stats.json", []

    def write(i):
        try:
            for _ in range(20):
                fsutil.write_json(target, {"writer": i, "pad": "x" * 10_000})
        except Exception as exc:  # a shared temporary name shows up here as a missing or foreign file
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and json.loads(target.read_text())["writer"] in range(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_best_is_never_deleted_before_its_replacement_is_in_place(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, step=1, tensors={"w": torch.ones(2)}, state={"n": 1}, keep=1, name="best")
    real_replace = os.replace

    def crash_on_publish(src, dst):  # the moment the new copy would take the name
        if Path(dst).name == "best" and Path(src).name.startswith(".tmp-"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_publish)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, step=2, tensors={"w": torch.zeros(2)}, state={"n": 2}, keep=1, name="best")
    tensors, state = load_checkpoint(tmp_path / "checkpoints" / "best")
    assert state["n"] == 1 and torch.equal(tensors["w"], torch.ones(2))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]


def test_a_crash_between_the_two_renames_is_repaired(tmp_path):
    from ganforge import fsutil

    folder = tmp_path / "checkpoints"
    save_checkpoint(tmp_path, step=1, tensors={"w": torch.ones(2)}, state={}, keep=1, name="best")
    os.replace(folder / "best", folder / ".old-best-123-abcd1234")  # what a kill right after moving aside leaves
    (folder / ".tmp-step_000000009-77-deadbeef").mkdir()               # and a killed save's half folder
    (folder / ".tmp-step_000000003-4242").mkdir()                      # the name older versions used
    assert sorted(fsutil.clean_stale(folder)) == [".tmp-step_000000003-4242", ".tmp-step_000000009-77-deadbeef",
                                                  "best"]
    assert sorted(p.name for p in folder.iterdir()) == ["best"]
    load_checkpoint(folder / "best")


def test_stale_temporaries_of_killed_saves_are_cleaned_on_resume(tmp_path):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", *TINY, "--max-steps", "2"]) == 0
    stale = tmp_path / "r" / "checkpoints" / ".tmp-step_000000004-4242"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"half")
    assert run_cli(["train", "--resume", str(tmp_path / "r"), "--max-steps", "3"]) == 0
    assert not stale.exists()
    assert not [p for p in (tmp_path / "r").rglob(".tmp-*")]


def test_folder_lock_is_exclusive_and_released(tmp_path):
    from ganforge import fsutil

    lock = fsutil.FolderLock(tmp_path)
    with pytest.raises(fsutil.FolderBusy, match=f"in use by another process \\(pid {os.getpid()} on "):
        fsutil.FolderLock(tmp_path)
    lock.release()
    fsutil.FolderLock(tmp_path).release()


@pytest.mark.slow  # two trainings as subprocesses
def test_second_training_in_one_run_folder_is_refused_until_the_first_dies(tmp_path, capsys):
    run = tmp_path / "r"
    first = subprocess.Popen([sys.executable, "-m", "ganforge", "train", "--out", str(tmp_path), "--name", "r",
                              *TINY, "--epochs", "500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list_checkpoints(run):
            assert first.poll() is None, "the first training exited early"
            time.sleep(0.05)
        assert run_cli(["train", "--resume", str(run), "--max-steps", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{run} is in use by another process (pid {first.pid} on " in err[0]
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel releases the lock with the process
        first.wait()
    assert run_cli(["train", "--resume", str(run), "--max-steps", "2"]) == 0
