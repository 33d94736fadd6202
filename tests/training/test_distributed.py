"""torchrun on CPU with gloo: two ranks train the same model, one run folder, identical weights; a
signal to one rank stops all at one step; a rank killed under --max-restarts loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import EXACT, TINY, run_cli
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow  # every test starts torchrun

DDP_TINY = [*TINY, "--device", "cpu", "--batch-size", "16", "--set", "threads=1"]  # 8 steps an epoch on 2 ranks


def torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={restarts}", "-m", "ganforge", "train", *args]


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the workers torchrun started (its child processes)."""
    pids = {}
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0") if ppid == launcher.pid else []
        except (OSError, ValueError, IndexError):  # not a process, or one that just ended
            continue
        rank = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
        if rank:
            pids[rank[0]] = int(proc.name)
    return pids


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"torchrun exited early:\n{proc.communicate()[0]}"
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{proc.communicate()[0]}")
        time.sleep(0.02)


def test_torchrun_two_ranks_on_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ganforge", "train", "--out", str(tmp_path), "--name", "ddp", "--device", "cpu",
           "--epochs", "2", "--batch-size", "16", "--set", "data.limit=256", "--set", "model.g_channels=8",
           "--set", "model.d_channels=8", "--set", "train.log_every=2", "--set", "threads=1",
           "--set", "eval_every=1", "--set", "eval_n=64"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # only rank 0 wrote
    run = tmp_path / "ddp"
    _, state = load_checkpoint(list_checkpoints(run)[-1])
    # Each rank took half of each epoch: 256 images / (16 per batch x 2 ranks) = 8 steps an epoch.
    assert state["world_size"] == 2 and state["progress"]["step"] == 16
    assert state["progress"]["images"] == 2 * 256
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    # The checkpoint is written only after every rank's weight digest matched (check_in_sync).
    assert result.stdout.count("finished at step 16") == 1
    # Both ranks evaluated together (split feature extraction); rank 0 logged once an epoch.
    evals = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if "eval/" in s]
    assert [r["step"] for r in evals] == [8, 16] and all(r["eval/cls-fid"] > 0 for r in evals)
    assert (run / "checkpoints" / "best" / "state.pt").is_file()


def test_torchrun_eval_splits_the_work_and_matches_one_process(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "4", *tiny_args]) == 0
    # 101 images in batches of 50: the last batch (1 image) gives rank 1 only padding.
    args = ["-m", "ganforge", "eval", str(tmp_path / "r"), "--device", "cpu", "--n-gen", "101", "--n-real", "77",
            "--metrics", "cls-fid,cls-is", "--batch-size", "50"]
    launchers = {"one": [], "two": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]}
    records = {}
    for label, launcher in launchers.items():
        env = {**os.environ, "GANFORGE_CACHE": str(tmp_path / f"cache-{label}")}  # both compute the real side
        cmd = [sys.executable, *launcher, *args, "--json", str(tmp_path / f"{label}.json")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        records[label] = json.loads((tmp_path / f"{label}.json").read_text())
    assert [records[k]["ranks"] for k in ("one", "two")] == [1, 2]
    assert result.stdout.count("wrote ") == 1  # rank 0 alone reports
    for key in ("cls-fid", "cls-is"):
        one = records["one"]["metrics"][key]["value"]
        assert records["two"]["metrics"][key]["value"] == pytest.approx(one, rel=1e-9), key


@pytest.mark.parametrize("to", ["rank 1", "the process group"])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, to):
    """SIGINT to rank 1 alone: the ranks agree at the window end, both checkpoint and leave at one step.
    SIGINT to the whole group (Ctrl-C in a terminal): torchrun forwards it, so each worker gets it twice."""
    run = tmp_path / "r"
    proc = subprocess.Popen(torchrun("--out", str(tmp_path), "--name", "r", *DDP_TINY, "--epochs", "500"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0, proc)
    if to == "rank 1":
        os.kill(worker_pids(proc)[1], signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=240)[0]
    _, state = load_checkpoint(list_checkpoints(run)[-1])  # written only if both ranks took part in the save
    step = state["progress"]["step"]
    assert f"stopped: received SIGINT at step {step} " in out, out
    assert f"resume with: torchrun --standalone --nproc_per_node=2 -m ganforge train --resume {run}" in out
    assert proc.returncode != 0
    if to == "rank 1":
        assert out.count("exitcode  : 130") == 2, out  # both ranks exited as stopped, not finished


def test_elastic_restart_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """torchrun --max-restarts with --resume auto: rank 0 dies mid-run, the group restarts and continues
    from the last step checkpoint (batch norm statistics averaged first) to the same final weights."""
    flags = [*DDP_TINY, *EXACT, "--epochs", "4", "--set", "train.checkpoint_steps=3", "--resume", "auto"]
    whole = subprocess.run(torchrun("--out", str(tmp_path), "--name", "whole", *flags), capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout + whole.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(torchrun("--out", str(tmp_path), "--name", "killed", *flags, restarts=2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run / "checkpoints" / "step_000000009").is_dir(), proc)
    os.kill(worker_pids(proc)[0], signal.SIGKILL)  # rank 0: the one holding the lock and writing files
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "no run named 'killed' with a checkpoint" in out  # the first start found nothing and began
    assert "resumed from" in out and "finished at step 32" in out

    a, _ = load_checkpoint(list_checkpoints(tmp_path / "whole")[-1])
    b, state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["progress"]["step"] == 32
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
