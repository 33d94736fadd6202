"""The Optuna study behind a sweep: its storage, what it was started with, and trials that died running.

A study lives in an RDB storage (default: sqlite in the sweep folder; any SQLAlchemy URL, e.g.
PostgreSQL, for many machines). A heartbeat every HEARTBEAT_S marks a trial alive; a trial whose
process died (a machine lost, SIGKILL) is failed by the next worker once GRACE_S has passed without
one and asked again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). In the
default storage the sweep holds its folder's lock, so a RUNNING trial found at the start belongs to
a dead sweep: it is failed and asked again at once.

A trial asked again does not count towards `--trials`; every other finished trial (complete,
pruned, or failed because training failed) does, so a resumed sweep continues the count.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ganforge.errors import ConfigError
from ganforge.sweep.space import Space

HEARTBEAT_S, GRACE_S = 30, 120
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
UNCOMPARED = ("data.root",)  # may differ between the machines of one study


def open_storage(url: str) -> RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats and the retry callback are marked experimental
        try:
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
                              engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
        except Exception as exc:  # SQLAlchemy's errors for a bad URL, driver or server are many
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"--storage {url}: cannot open it ({reason})") from None


def started_with(space: Space, config: dict) -> dict[str, Any]:
    """What a continuation must match: the space, the objective and the base config of every trial."""
    flat = {f"{s}.{k}": v for s, section in config.items() if isinstance(section, dict) for k, v in section.items()}
    return {"space": space.describe(), "config": {k: v for k, v in flat.items() if k not in UNCOMPARED}}


def open_study(storage: RDBStorage, name: str, space: Space, meta: dict[str, Any]) -> optuna.Study:
    """Create the study, or continue it when it was started with the same space and config."""
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials,
                                          n_warmup_steps=round(space.warmup_kimg * 1000))
              if space.pruner == "median" else optuna.pruners.NopPruner())
    direction = optuna.study.StudyDirection[space.direction.upper()]
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                pruner=pruner)
    # A continuation starts its sampler further along, or a seeded sampler would ask the first values again.
    seed = None if space.seed is None else space.seed + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    meta = json.loads(json.dumps(meta))  # as the storage gives it back: tuples become lists
    before = study.user_attrs
    if not before:
        for key, value in meta.items():
            study.set_user_attr(key, value)
        return study
    for key, value in meta.items():
        if before.get(key) != value:
            raise ConfigError(f"study {name!r}: it was started with another {_difference(key, before.get(key), value)}"
                              f"; continue it with the same space file and config, or give another --study")
    return study


def _difference(key: str, old: Any, new: Any) -> str:
    if key == "config" and isinstance(old, dict):
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "config (" + ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in changed[:3]) + ")"
    if key == "space" and isinstance(old, dict):
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"search space (changed: {', '.join(changed)})"
    return key


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Ask `trial`'s parameters again in a new trial (it died, or its sweep was stopped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RetryHeartbeatStaleTrialCallback()(study, trial)


def recover(study: optuna.Study) -> list[int]:
    """Fail every RUNNING trial and ask it again; only for a storage no other sweep uses (the folder's lock)."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        retry(study, study._storage.get_trial(trial._trial_id))
        found.append(trial.number)
    return found


def retried(trials: list[FrozenTrial]) -> dict[int, int]:
    """Trial number -> the number of the trial that asked it again."""
    return {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])[-1:]}


def counted(study: optuna.Study) -> int:
    """Finished trials that count towards --trials: all but those asked again."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return sum(1 for t in trials if t.state in FINISHED and t.number not in again)
