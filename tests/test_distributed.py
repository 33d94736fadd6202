"""torchrun on CPU with gloo: two ranks train the same model, one run folder, identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint


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
    from ganforge.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "4", *tiny_args])
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
        assert records["two"]["metrics"][key]["value"] == pytest.approx(records["one"]["metrics"][key]["value"], rel=1e-9), key
