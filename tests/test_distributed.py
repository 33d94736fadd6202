"""torchrun on CPU with gloo: two ranks train the same model, one run folder, identical weights."""

from __future__ import annotations

import subprocess
import sys

import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint


def test_torchrun_two_ranks_on_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ganforge", "train", "--out", str(tmp_path), "--name", "ddp", "--device", "cpu",
           "--epochs", "2", "--batch-size", "16", "--set", "data.limit=256", "--set", "model.g_channels=8",
           "--set", "model.d_channels=8", "--set", "train.log_every=2", "--set", "threads=1"]
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
