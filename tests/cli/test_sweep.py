"""`ganforge sweep` end to end: real tiny trainings on mnist-5k scored by the classifier FID, best.yaml that
trains, a study continued and one whose sweep was killed resumed, and refusals before any trial starts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from ganforge.config import load_yaml

# conftest's TINY as settings of every trial: 256 digits, 8-channel nets, 8 steps an epoch, one thread;
# 2 epochs, the classifier FID of 100 images after each.
TINY_TRIAL = ["train.batch_size=32", "data.limit=256", "model.g_channels=8", "model.d_channels=8",
              "train.log_every=2", "train.epochs=2", "train.eval_n=100", "train.threads=1"]
SETS = [w for s in TINY_TRIAL for w in ("--set", s)]
SPACE = {"objective": {"metric": "cls-fid", "direction": "minimize"}, "pruner": "none", "seed": 0,
         "space": {"optim.lr_g": {"low": 1e-4, "high": 2e-3, "log": True}, "optim.beta1": {"choices": [0.0, 0.5]}}}


def _space(tmp_path: Path, data=None) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data or SPACE))
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow  # three tiny trainings and one of best.yaml
def test_a_sweep_writes_best_yaml_that_trains_and_a_continuation_adds_to_the_count(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--space", str(_space(tmp_path)), "--trials", "2", "--out", str(out), *SETS]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    for r in rows:  # the value is the run's last logged evaluation, read here from its own metrics.jsonl
        evals = [json.loads(s) for s in (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert r["value"] == [e["eval/cls-fid"] for e in evals if "eval/cls-fid" in e][-1]
        assert 1e-4 <= r["params"]["optim.lr_g"] <= 2e-3 and r["params"]["optim.beta1"] in (0.0, 0.5)
        trained = load_yaml(Path(r["run_dir"]) / "config.yaml")
        assert trained.optim.lr_g == r["params"]["optim.lr_g"] and trained.train.eval_metrics == "cls-fid"
    best = min(rows, key=lambda r: r["value"])
    cfg = load_yaml(out / "best.yaml")
    assert (cfg.optim.lr_g, cfg.optim.beta1) == (best["params"]["optim.lr_g"], best["params"]["optim.beta1"])
    assert cfg.data.limit == 256 and cfg.train.threads == 1 and cfg.train.eval_every == 1
    assert "no differential-privacy guarantee" in printed and f"best: trial {best['trial']}" in printed
    table = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert [(t["trial"], t["run_dir"]) for t in table] == [(str(r["trial"]), r["run_dir"]) for r in rows]
    assert [float(t["cls-fid"]) for t in table] == pytest.approx([r["value"] for r in rows], rel=1e-3)
    md = (out / "trials.md").read_text().splitlines()
    assert md[0].startswith("| trial | state | cls-fid |") and len(md) == 2 + len(rows)

    assert run_cli(["train", "--config", str(out / "best.yaml"), "--out", str(tmp_path / "runs"),
                    "--max-steps", "2"]) == 0
    assert load_yaml(tmp_path / "runs" / "best" / "config.yaml").optim.lr_g == best["params"]["optim.lr_g"]

    # The same command with a higher total runs only the trials that are missing.
    assert run_cli(argv[:4] + ["3"] + argv[5:]) == 0
    assert "2 of 3 trials done, 1 to run" in capsys.readouterr().out
    rows = _rows(out)
    assert [r["trial"] for r in rows] == [0, 1, 2] and rows[2]["state"] == "COMPLETE"
    assert rows[2]["params"] != rows[0]["params"]  # the seeded sampler went on, not back to its first draw
    assert run_cli(argv[:4] + ["3"] + argv[5:]) == 0
    assert "3 of 3 trials done, 0 to run" in capsys.readouterr().out and len(_rows(out)) == 3


@pytest.mark.slow  # a sweep killed with its training, then resumed: one and a half tiny trainings
def test_a_killed_sweep_resumes_its_running_trial_with_the_same_values_and_keeps_the_count(tmp_path, capsys):
    import ganforge

    out = tmp_path / "sweep"
    argv = ["sweep", "--space", str(_space(tmp_path)), "--trials", "1", "--out", str(out), *SETS]
    env = {**os.environ, "PYTHONPATH": str(Path(ganforge.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", *argv], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = out / "trials" / "trial-0000" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not metrics.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metrics.is_file(), "the first trial never started training"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training, as a lost machine
        proc.wait()
    assert run_cli(argv) == 0
    assert "trial 0 was running when its sweep died" in capsys.readouterr().out
    rows = _rows(out)
    assert [(r["trial"], r["state"]) for r in rows] == [(0, "FAIL"), (1, "COMPLETE")]
    assert rows[1]["params"] == rows[0]["params"] and "asked again as trial 1" in rows[0]["note"]
    assert load_yaml(out / "best.yaml").optim.lr_g == rows[1]["params"]["optim.lr_g"]


def test_a_bad_space_file_is_one_line_per_problem_and_nothing_is_created(tmp_path, capsys):
    bad = {"objective": {"metric": "cls-fidd"},
           "space": {"optim.lr_gg": {"low": 1e-4, "high": 1e-3}, "optim.lr_g": {"low": 1e-3, "high": 1e-4},
                     "optim.lr_d": {"low": 0, "high": 1e-3, "log": True},
                     "model.g_channels": {"low": 16.5, "high": 64}}}
    out = tmp_path / "sweep"
    assert run_cli(["sweep", "--space", str(_space(tmp_path, bad)), "--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and all(line.startswith("ganforge: error: ") for line in err)
    assert [m for m in ("unknown config key 'optim.lr_gg'", "low 0.001 >= high 0.0001", "a log scale needs low > 0",
                        "16.5: expected an integer", "'cls-fidd'") if not any(m in line for line in err)] == []
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "4096"], "--workers 4096: must be between 1 and"),
    (["--trials", "0"], "--trials 0: must be between 1 and"),
    (["--set", "train.threads=3000"], "train.threads=3000: must be between"),
    (["--preset", "demo", "--config", "x.yaml"], "give one of them"),
    (["--set", "optim.nope=1"], "unknown config key 'optim.nope'"),
    (["--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: cannot open it"),
])
def test_refusals_before_any_trial_are_one_line(tmp_path, capsys, argv, message):
    base = ["sweep", "--space", str(_space(tmp_path)), "--trials", "2", "--out", str(tmp_path / "sweep")]
    if "--trials" in argv:
        base = base[:3] + base[5:]
    assert run_cli(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_another_study_or_config_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"study": "first", "storage": "sqlite:///x.db"}))
    argv = ["sweep", "--space", str(_space(tmp_path)), "--trials", "2", "--out", str(out), "--study", "second"]
    assert run_cli(argv) == 2
    assert "holds the sweep of study 'first'" in capsys.readouterr().err


def test_workers_split_the_cores(monkeypatch):
    from ganforge import runtime
    from ganforge.sweep import threads_per_trial

    monkeypatch.setattr(runtime, "cpu_threads", lambda *a, **k: 16)
    assert [threads_per_trial(k, 0) for k in (1, 2, 3, 16)] == [16, 8, 5, 1]
    assert threads_per_trial(4, 4) == 4


def test_train_config_and_preset_together_are_refused(tmp_path, capsys):
    assert run_cli(["train", "--config", str(tmp_path / "best.yaml"), "--preset", "demo", "--out",
                    str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err
    assert run_cli(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]) == 2
    assert "none.yaml: cannot read config" in capsys.readouterr().err
