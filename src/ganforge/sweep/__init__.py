"""`ganforge sweep`: hyperparameter search with Optuna (Akiba et al. 2019, "Optuna: A Next-generation
Hyperparameter Optimization Framework"), each trial a real `ganforge train` run.

    space.py    the search-space file: config keys -> ranges or choices, the objective metric, the pruner
    study.py    the Optuna study: storage (sqlite in the sweep folder, or a shared URL), what it was
                started with, trials that died running asked again, the count towards --trials
    process.py  one trial's training process, followed through its metrics.jsonl
    runner.py   K trials at a time, pruning by the median stopping rule, stopping on signals
    results.py  trials.jsonl, best.yaml, the closing table and the privacy note

A sweep folder holds `sweep.json` (its study and storage), `study.db` (the default storage),
`base.yaml` (every trial's config before its sampled values), `trials/trial-NNNN/` (the runs, with
`trial-NNNN.log` beside each), `trials.jsonl` and `best.yaml`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from ganforge import fsutil
from ganforge.config import Config
from ganforge.errors import ConfigError
from ganforge.sweep.space import Space, SpaceError, load_space

MARK = "sweep.json"
MAX_TRIALS = 100_000


def evaluating(base: Config, space: Space) -> Config:
    """`base` with the periodic evaluation computing the objective's metric (every epoch unless it
    already evaluates on its own schedule)."""
    cfg = copy.deepcopy(base)
    cfg.train.eval_metrics = space.eval_metric
    if not (cfg.train.eval_every or cfg.train.eval_every_kimg):
        cfg.train.eval_every = 1
    return cfg


def threads_per_trial(workers: int, configured: int) -> int:
    """Each of `workers` trials' CPU threads, so that together they use no more than the cores."""
    from ganforge.runtime import cpu_threads

    cores = cpu_threads()
    if not 1 <= workers <= cores:
        raise ConfigError(f"--workers {workers}: must be between 1 and {cores}, the cores this process may use "
                          f"(each trial needs at least one)")
    if configured and configured * workers > cores:
        raise ConfigError(f"--workers {workers} with train.threads={configured}: {workers * configured} threads "
                          f"on {cores} cores; lower one of them, or leave train.threads at 0 to split the cores")
    return configured or cores // workers


def default_storage(out: Path) -> str:
    """sqlite in the sweep folder: only the sweep holding the folder's lock uses it."""
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


def check_out(out: Path, study: Optional[str], storage: Optional[str]) -> tuple[str, str]:
    """Refuse an --out that is not a new or empty folder nor this sweep's own; the study name and storage."""
    from ganforge.outputs.files import check_protected, check_writable

    out = Path(out)
    mark = out / MARK
    if mark.is_file():
        try:
            known = json.loads(mark.read_text())
            name, url = str(known["study"]), str(known["storage"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"--out {out}: {mark} is not a sweep's record; give another folder") from None
        if (study and study != name) or (storage and storage != url):
            raise ConfigError(f"--out {out}: holds the sweep of study {name!r} in {url}; continue it with the same "
                              f"--study and --storage, or give another --out")
        return name, url
    check_protected(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: is a file; give a new or empty folder")
        first = next((p.name for p in sorted(out.iterdir())), None)
        if first is not None:
            raise ConfigError(f"--out {out}: holds files that are not a sweep's ({first}, ...); give a new or empty "
                              f"folder")
    else:  # created with its parents, as `ganforge train --out` is, where the nearest existing one is writable
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir():
            raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
        check_writable(parent, "--out", out)
    url = storage or default_storage(out)
    return study or out.resolve().name, url


def start(*, out: Path, base: Config, space_file: Path, trials: int, workers: int = 1,
          storage: Optional[str] = None, study: Optional[str] = None,
          log: Callable[[str], None] = print) -> int:
    """Check everything, claim `out`, run the sweep; its exit code (0, or 130/143 when stopped)."""
    from ganforge.fsutil import FolderBusy, FolderLock
    from ganforge.sweep.runner import Sweep

    if not 1 <= trials <= MAX_TRIALS:
        raise ConfigError(f"--trials {trials}: must be between 1 and {MAX_TRIALS}")
    space = load_space(space_file, base)
    threads = threads_per_trial(workers, base.train.threads)
    name, url = check_out(out, study, storage)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(out)
    except FolderBusy as exc:
        raise ConfigError(f"--out {exc}; one sweep per folder (a second machine gives its own --out and the "
                          f"same --storage)") from None
    try:
        fsutil.write_json(out / MARK, {"study": name, "storage": url})
        sweep = Sweep(out=out, base=evaluating(base, space), space=space, trials=trials, workers=workers,
                      threads=threads, storage=url, study_name=name, local=url == default_storage(out), log=log)
        return sweep.run()
    finally:
        lock.release()


__all__ = ["start", "load_space", "Space", "SpaceError", "evaluating", "threads_per_trial", "check_out"]
