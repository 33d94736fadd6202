"""Run a sweep: K concurrent `ganforge train` processes asked for by one Optuna study, pruned by the median rule.

Each trial trains in its own run folder (`DIR/trials/trial-NNNN`) from `DIR/base.yaml` with `--set`
for its sampled values; its periodic evaluations are Optuna's intermediate values at the images seen,
and the median stopping rule (Golovin et al. 2017, Google Vizier; Optuna's MedianPruner) stops a trial
whose best value so far is worse than the median of earlier trials at the same step: it gets SIGTERM,
checkpoints and exits. The objective is the trial's last evaluation, what retraining its config gives.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna

from ganforge.config import Config, save_yaml, to_dict
from ganforge.sweep import results
from ganforge.sweep.process import TrialProcess, read_evaluations
from ganforge.sweep.space import Space, set_value
from ganforge.sweep.study import counted, open_storage, open_study, recover, retry, started_with

INTERRUPTED = (130, 143)  # ganforge train stopped by SIGINT / SIGTERM, with a checkpoint


class TrialFailed(Exception):
    """Training failed or logged no evaluation: the trial is FAIL and counts; the sweep goes on."""


class Interrupted(Exception):
    """The sweep is stopping: the trial is FAIL, asked again by whoever continues the study."""


@dataclass
class Sweep:
    out: Path
    base: Config            # every trial's config before its sampled values; evaluates the objective
    space: Space
    trials: int             # the study's total (--trials): a continuation runs what is left
    workers: int = 1
    threads: int = 1        # CPU threads of each trial process
    storage: str = ""
    study_name: str = "sweep"
    local: bool = True      # the default storage, which only this process uses (the folder's lock)
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.stopping = 0
        self.live: set[TrialProcess] = set()
        self._lock = threading.Lock()
        self.study: Optional[optuna.Study] = None

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        """Run the trials left; write trials.jsonl and best.yaml. The exit code: 0, or 130/143 when stopped."""
        # One line per trial comes from here instead; Optuna's own logs a failed trial with a traceback.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        save_yaml(self.base, self.out / "base.yaml")
        study = self.study = open_study(open_storage(self.storage), self.study_name, self.space,
                                        started_with(self.space, to_dict(self.base)))
        for number in recover(study) if self.local else []:
            self.log(f"trial {number} was running when its sweep died: marked failed, its parameters asked again")
        left = self.trials - counted(study)
        self.log(self._header(left))
        previous = self._install_signals()
        try:
            if left > 0:
                study.optimize(self.objective, n_trials=left, n_jobs=self.workers, catch=(TrialFailed,),
                               callbacks=[self.after_trial])
        except Interrupted:
            pass  # the trial it came from is recorded; the others stopped the same way
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.log(results.write(study, self.out, self.base, self.space))
        return 128 + self.stopping if self.stopping else 0

    def _header(self, left: int) -> str:
        t = self.base.train
        every = f"every {t.eval_every} epoch(s)" if t.eval_every else f"every {t.eval_every_kimg:g} kimg"
        pruning = (f"median pruning after {self.space.startup_trials} trials" if self.space.pruner == "median"
                   else "no pruning")
        return (f"ganforge sweep: study {self.study_name!r} in {self.storage}: {self.trials - left} of {self.trials} "
                f"trials done, {max(left, 0)} to run, {self.workers} at a time with {self.threads} thread(s) each\n"
                f"objective: {self.space.direction} {self.space.metric} of the periodic evaluation "
                f"(train.eval_n={t.eval_n} generated images, {every}); {pruning}")

    # ------------------------------------------------------------------ one trial

    def command(self, number: int, params: dict) -> list[str]:
        sets = [f"{k}={set_value(v)}" for k, v in params.items()] + [f"train.threads={self.threads}"]
        return [sys.executable, "-m", "ganforge", "train", "--config", str(self.out / "base.yaml"),
                "--out", str(self.out / "trials"), "--name", f"trial-{number:04d}",
                *(w for s in sets for w in ("--set", s))]

    def objective(self, trial: optuna.Trial) -> float:
        params = self.space.sample(trial)
        if self.stopping:
            self._interrupted(trial, "the sweep was stopping before it started")
        run_dir = self.out / "trials" / f"trial-{trial.number:04d}"
        # A trial asked again inherits its first try's attributes (Optuna's retry copies them): its own note.
        again = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("retry_history", [])[-1:]
        trial.set_user_attr("note", f"the values of trial {again[0]} again" if again else "")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", os.uname().nodename)
        if run_dir.exists():
            raise TrialFailed(f"{run_dir} exists already (from another study in this folder?)")
        t = self.base.train
        grid = round(t.eval_every_kimg * 1000) if t.eval_every_kimg > 0 else 0
        proc = TrialProcess(self.command(trial.number, params), metrics=run_dir / "metrics.jsonl",
                            metric=self.space.metric, log=self.out / "trials" / f"trial-{trial.number:04d}.log",
                            threads=self.threads, grid=grid)
        (self.out / "trials").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.live.add(proc.start())
        try:
            code = self._follow(trial, proc)
        finally:
            with self._lock:
                self.live.discard(proc)
        if self.stopping or code in INTERRUPTED:
            self._interrupted(trial, f"stopped (exit {code}) before it finished")
        if code != 0:
            trial.set_user_attr("note", f"exit {code}: {proc.last_line()}")
            raise TrialFailed(proc.last_line())
        found = read_evaluations(run_dir / "metrics.jsonl", self.space.metric, grid=grid)
        if not found:
            trial.set_user_attr("note", f"no eval/{self.space.metric} in metrics.jsonl")
            raise TrialFailed(f"{run_dir}: no evaluation of {self.space.metric} was logged; train longer than "
                              f"one evaluation period (train.eval_every / train.eval_every_kimg)")
        return found[-1].value

    def _follow(self, trial: optuna.Trial, proc: TrialProcess) -> int:
        """Report each evaluation; stop the process when the pruner says so. The exit code."""
        reported: set[int] = set()
        for ev in proc.follow():
            if ev.images in reported:  # a rollback re-evaluates at a step Optuna already holds
                continue
            reported.add(ev.images)
            trial.report(ev.value, ev.images)
            if not self.stopping and trial.should_prune():
                code = proc.stop()
                trial.set_user_attr("note", f"pruned at {ev.images / 1000:g} kimg ({self.space.metric} "
                                            f"{ev.value:.4g}); its training stopped (exit {code})")
                raise optuna.TrialPruned(f"{self.space.metric} {ev.value:.4g} at {ev.images} images")
        return proc.wait()

    def _interrupted(self, trial: optuna.Trial, why: str):
        assert self.study is not None
        trial.set_user_attr("note", f"interrupted: {why}; its parameters are asked again")
        retry(self.study, self.study._storage.get_trial(trial._trial_id))
        raise Interrupted(why)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:
            self.log(results.trial_line(trial, self.space.metric))
            results.write_table(study, self.out)
        if counted(study) >= self.trials:
            study.stop()  # the total is reached, by this machine or another on the same storage

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, frame) -> None:
        """Stop every trial (each checkpoints) and start no new one; a second signal quits at once."""
        if self.stopping:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.stopping = signum
        self.log(f"\nreceived {signal.Signals(signum).name}: stopping the running trials (each writes a checkpoint); "
                 f"the same command continues the study")
        with self._lock:
            for proc in self.live:
                proc.signal()

