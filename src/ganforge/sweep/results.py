"""What a sweep leaves: the trials of the study as `trials.jsonl` (every field), `trials.csv` and
`trials.md` (one row per trial with its run folder), `best.yaml` and the closing table.

best.yaml is the base config with the best trial's values: `ganforge train --config DIR/best.yaml`
trains it again from scratch. The closing note says what a search on private data costs: choosing
hyperparameters by their result on the training data is itself a use of that data, and a
differentially private training's guarantee covers one run, not the selection among many
(Papernot & Steinke 2022, "Hyperparameter Tuning with Renyi Differential Privacy").
"""

from __future__ import annotations

import copy
import csv
import datetime
import io
import json
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from ganforge import fsutil
from ganforge.config import Config, apply_override, save_yaml
from ganforge.sweep.space import Space, set_value
from ganforge.sweep.study import retried

PRIVACY_NOTE = ("note: the search itself used the training data (each trial's result chose the next); no "
                "differential-privacy guarantee of a single training covers it (Papernot & Steinke 2022): on "
                "private data, account for the search or tune on public data")


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        apply_override(cfg, f"{key}={set_value(value)}")
    return cfg


def seconds(trial: FrozenTrial) -> Optional[float]:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or datetime.datetime.now()
    return round((end - trial.datetime_start).total_seconds(), 1)


def row(trial: FrozenTrial, again: dict[int, int]) -> dict[str, Any]:
    steps = sorted(trial.intermediate_values)
    note = trial.user_attrs.get("note", "")
    if trial.number in again and trial.state != TrialState.WAITING:
        note = (note + "; " if note else "") + f"asked again as trial {again[trial.number]}"
    return {"trial": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "kimg": steps[-1] / 1000 if steps else None, "seconds": seconds(trial),
            "run_dir": trial.user_attrs.get("run_dir"), "host": trial.user_attrs.get("host"), "note": note}


def write_table(study: optuna.Study, out: Path, metric: str = "value") -> list[dict[str, Any]]:
    trials = study.get_trials(deepcopy=False)
    rows = [row(t, retried(trials)) for t in trials]
    fsutil.write_text(out / "trials.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    head, body = _cells(rows, metric, run_dir=True)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([head, *body])
    fsutil.write_text(out / "trials.csv", text.getvalue())
    md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    fsutil.write_text(out / "trials.md", "\n".join(md) + "\n")
    return rows


def trial_line(trial: FrozenTrial, metric: str) -> str:
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    took: Any = seconds(trial)
    what = f"{metric} {trial.value:.4g}" if trial.state == TrialState.COMPLETE else trial.state.name.lower()
    note = trial.user_attrs.get("note")
    took = "" if took is None else f", {took:.0f} s"
    return f"trial {trial.number}: {what} ({params}){took}" + (f"; {note}" if note else "")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else set_value(value)


def _cells(rows: list[dict[str, Any]], metric: str, *, run_dir: bool = False) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows as text, one column per searched key (the run folder for the files)."""
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", "state", metric, "kimg", "s", *keys, "note", *(["run_dir"] if run_dir else [])]
    body = [[str(r["trial"]), r["state"].lower(), "-" if r["value"] is None else f"{r['value']:.4g}",
             "-" if r["kimg"] is None else f"{r['kimg']:g}", "-" if r["seconds"] is None else f"{r['seconds']:.0f}",
             *("-" if k not in r["params"] else _short(r["params"][k]) for k in keys), r["note"],
             *([r["run_dir"] or "-"] if run_dir else [])] for r in rows]
    return head, body


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    head, body = _cells(rows, metric)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body])


def write(study: optuna.Study, out: Path, base: Config, space: Space) -> str:
    """trials.jsonl and best.yaml; the table, the best trial and the privacy note, as text to print."""
    rows = write_table(study, out, space.metric)
    lines = [format_table(rows, space.metric), f"wrote {out / 'trials.jsonl'}, trials.csv and trials.md"]
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if complete:
        best = study.best_trial
        cfg = trial_config(base, best.params)
        cfg.description = (f"best of sweep {study.study_name!r}: trial {best.number}, {space.metric} "
                           f"{best.value:.4g} (train.eval_n={base.train.eval_n})")
        save_yaml(cfg, out / "best.yaml")
        lines += [f"best: trial {best.number}, {space.metric} {best.value:.4g}; wrote {out / 'best.yaml'}: "
                  f"ganforge train --config {out / 'best.yaml'}"]
    else:
        lines += ["no trial completed yet: no best.yaml"]
    return "\n".join([*lines, PRIVACY_NOTE])
