"""End-to-end training on a small slice of the shipped MNIST subset: files, resume, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from ganforge.config import preset_config
from ganforge.runtime import Dist
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint, load_generator
from ganforge.training.loop import Trainer


def test_one_step_changes_both_networks(tmp_path):
    cfg = preset_config("demo")
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 64, 16, 8, 8
    trainer = Trainer(cfg, run_dir=tmp_path / "run", dist=Dist())
    before_g = [p.detach().clone() for p in trainer.G.parameters()]
    before_d = [p.detach().clone() for p in trainer.D.parameters()]
    x, labels = next(trainer.batches.epoch(0))
    trainer.train_step(x, labels)
    assert all(not torch.equal(a, b) for a, b in zip(before_d, trainer.D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_g, trainer.G.parameters()))
    trainer.log.close()


def test_two_epochs_write_every_artifact(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--epochs", "2", *tiny_args]) == 0
    run = tmp_path / "r"
    for name in ["config.yaml", "metrics.jsonl", "loss_curves.png", "samples/real.png", "samples/epoch_0001.png",
                 "samples/epoch_0002.png"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "images_per_s", "time"} <= set(records[0])
    assert records[-1]["step"] == 16  # 2 epochs x 256 images / 32 per batch
    assert [p.name for p in list_checkpoints(run)] == ["step_000000000", "step_000000008", "step_000000016"]
    # A second run with the same name gets a new folder instead of overwriting.
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "2", *tiny_args]) == 0
    assert (tmp_path / "r-2" / "config.yaml").is_file()
    assert (run / "samples" / "epoch_0002.png").is_file()


def test_resume_continues_counters_and_log(tmp_path, tiny_args):
    base = ["train", "--out", str(tmp_path), "--name", "r", *tiny_args]
    assert run_cli(base + ["--epochs", "1"]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "r"), "--epochs", "3"]) == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss_d" in r]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[-1] == 24
    # What the resume changed is recorded where it happened.
    assert {"step": 8, "event": "resume", "changed": {"train.epochs": [1, 3]}} in records
    _, state = load_checkpoint(list_checkpoints(tmp_path / "r")[-1])
    assert state["progress"]["epoch"] == 3 and state["progress"]["step"] == 24
    assert (tmp_path / "r" / "samples" / "epoch_0003.png").is_file()
    # `--resume auto` finds the same run by name; nothing left to do at epoch 3 of 3.
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--resume", "auto"]) == 0


def test_resume_is_exact(tmp_path, tiny_args):
    """Stopping after epoch 1 and resuming gives the same weights as one uninterrupted run."""
    flags = [*tiny_args, "--set", "deterministic=true", "--set", "loss.label_flip=0.1", "--set", "model.ema_kimg=0.5"]
    assert run_cli(["train", "--out", str(tmp_path), "--name", "whole", "--epochs", "2", *flags]) == 0
    assert run_cli(["train", "--out", str(tmp_path), "--name", "split", "--epochs", "1", *flags]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "split"), "--epochs", "2"]) == 0
    a, _ = load_checkpoint(list_checkpoints(tmp_path / "whole")[-1])
    b, _ = load_checkpoint(list_checkpoints(tmp_path / "split")[-1])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_generator_reproduces_outputs(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "3", *tiny_args]) == 0
    cfg, g = load_generator(tmp_path / "r")
    cfg2, g2 = load_generator(tmp_path / "r", checkpoint=list_checkpoints(tmp_path / "r")[-1])
    z = torch.randn(4, cfg.model.z_dim)
    labels = torch.arange(4) if cfg.model.conditional else None  # the demo preset is conditional
    assert torch.equal(g(z, labels), g2(z, labels))
    assert g(z, labels).shape == (4, 1, 28, 28)


def test_eval_every_logs_metrics_and_keeps_best(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--epochs", "2", *tiny_args,
                    "--set", "eval_every=1", "--set", "eval_n=64"]) == 0
    run = tmp_path / "r"
    evals = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if "eval/" in s]
    assert [r["epoch"] for r in evals] == [1, 2]
    assert all(r["eval/cls-fid"] > 0 and 1.0 <= r["eval/cls-is"] <= 10.0 for r in evals)
    _, state = load_checkpoint(run / "checkpoints" / "best")
    best_step = min(evals, key=lambda r: r["eval/cls-fid"])["step"]
    assert state["progress"]["step"] == best_step
    assert "best" not in [p.name for p in list_checkpoints(run)]  # resume never picks it


def test_eval_every_kimg_and_best_survives_resume(tmp_path, tiny_args):
    # 256 images an epoch; every 0.128 kimg is twice an epoch, at steps 4 and 8 of each.
    flags = ["--out", str(tmp_path), "--name", "r", *tiny_args, "--set", "eval_every_kimg=0.128", "--set", "eval_n=64"]
    assert run_cli(["train", "--epochs", "1", *flags]) == 0
    run = tmp_path / "r"
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 0
    evals = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if "eval/" in s]
    assert [r["step"] for r in evals] == [4, 8, 12, 16]
    assert [r["epoch"] for r in evals] == [0.5, 1.0, 1.5, 2.0]
    # The resumed half compared against the first half's best, so best is the lowest of all four.
    _, state = load_checkpoint(run / "checkpoints" / "best")
    best = min(evals, key=lambda r: r["eval/cls-fid"])
    assert state["progress"]["step"] == best["step"]
    assert state["progress"]["best_fid"] == pytest.approx(best["eval/cls-fid"])


def test_unknown_eval_metric_is_refused(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), *tiny_args, "--set", "eval_every=1",
                    "--set", "eval_metrics=fid,sharpness"]) == 2
