"""Pruning from the periodic evaluations, with a stand-in for `ganforge train`: a small script that logs an
evaluation to metrics.jsonl as training does, then either exits or waits to be stopped (SIGTERM)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ganforge.config import preset_config
from ganforge.sweep import evaluating
from ganforge.sweep.process import read_evaluations
from ganforge.sweep.runner import Sweep
from ganforge.sweep.space import load_space

FAKE_TRAIN = r'''
import json, signal, sys, time
from pathlib import Path
run, value, wait = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "wait"
def stop(signum, frame):
    (run / "stopped-by-sigterm").write_text("checkpointed")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
run.mkdir(parents=True)
with open(run / "metrics.jsonl", "a") as f:  # what the loop and the periodic evaluation write
    f.write(json.dumps({"step": 8, "epoch": 1.0, "kimg": 0.256, "loss_d": 1.0}) + "\n")
    f.write(json.dumps({"step": 8, "epoch": 1, "eval/cls-fid": value}) + "\n")
deadline = time.time() + 120
while wait and time.time() < deadline:
    time.sleep(0.05)
sys.exit(0 if not wait else 1)
'''


class FakeTrain(Sweep):
    """The sweep, its trials the script above: log `value`, then exit (or wait for SIGTERM when `wait`)."""

    value, wait = 0.0, False

    def command(self, number, params):
        script = self.out / "fake_train.py"
        script.write_text(FAKE_TRAIN)
        return [sys.executable, str(script), str(self.out / "trials" / f"trial-{number:04d}"), str(self.value),
                "wait" if self.wait else "exit"]


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"objective": {"metric": "cls-fid"}, "pruner": {"startup_trials": 1},
                                    "space": {"optim.lr_g": {"low": 1e-4, "high": 1e-3, "log": True}}}))
    base = preset_config("demo")
    space = load_space(path, base)
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    # An earlier trial: cls-fid 10 after 256 images.
    study.add_trial(optuna.create_trial(
        params={"optim.lr_g": 3e-4}, distributions={"optim.lr_g": optuna.distributions.FloatDistribution(
            1e-4, 1e-3, log=True)}, value=10.0, intermediate_values={256: 10.0}))
    s = FakeTrain(out=tmp_path, base=evaluating(base, space), space=space, trials=2, log=lambda line: None)
    s.study = study
    return s


@pytest.mark.slow  # starts a process
def test_a_trial_worse_than_the_median_at_the_same_step_is_pruned_and_its_process_stopped(sweep):
    sweep.value, sweep.wait = 100.0, True
    sweep.study.optimize(sweep.objective, n_trials=1)
    trial = sweep.study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {256: 100.0}
    run = Path(trial.user_attrs["run_dir"])
    assert (run / "stopped-by-sigterm").is_file()  # stopped by SIGTERM, the way ganforge train checkpoints
    assert "pruned at 0.256 kimg" in trial.user_attrs["note"] and "exit 143" in trial.user_attrs["note"]
    assert not sweep.live


@pytest.mark.slow
def test_a_trial_better_than_the_median_runs_to_its_end(sweep):
    sweep.value, sweep.wait = 5.0, False
    sweep.study.optimize(sweep.objective, n_trials=1)
    trial = sweep.study.trials[-1]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 5.0
    assert not (Path(trial.user_attrs["run_dir"]) / "stopped-by-sigterm").exists()


def test_evaluations_take_the_images_seen_of_their_step_and_skip_a_line_being_written(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 2, "kimg": 0.064, "loss_d": 1.0}, {"step": 8, "kimg": 0.256, "loss_d": 1.0},
             {"step": 8, "epoch": 1, "eval/cls-fid": 40.0, "eval/cls-is": 2.0},
             {"step": 10, "kimg": 0.32}, {"step": 16, "kimg": 0.512}, {"step": 16, "epoch": 2, "eval/cls-fid": 30.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 17, "ki')
    found = read_evaluations(metrics, "cls-fid")
    assert [(e.images, e.value) for e in found] == [(256, 40.0), (512, 30.0)]
    # On an eval_every_kimg grid of 250 images, the multiple each evaluation was due at.
    assert [e.images for e in read_evaluations(metrics, "cls-fid", grid=250)] == [250, 500]
    assert read_evaluations(tmp_path / "missing.jsonl", "cls-fid") == []
