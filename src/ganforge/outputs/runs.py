"""What a finished (or stopped) run folder says about itself, read without loading any network:
config, logged history, last-epoch losses, evaluation record and the images the run wrote."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ganforge.errors import CheckpointError, UsageError

# What makes two evaluations comparable: the same data and split, N, feature network and resize.
PROTOCOL_KEYS = ("dataset", "reference_split", "n_generated", "n_real", "feature_network", "resize_method",
                 "reference_data_digest")


@dataclass
class RunInfo:
    dir: Path
    config: dict[str, Any]
    config_text: str
    history: list[dict[str, Any]] = field(default_factory=list)
    eval: Optional[dict[str, Any]] = None
    progress: dict[str, Any] = field(default_factory=dict)  # the latest checkpoint's counters

    def done(self) -> dict[str, Any]:
        """epochs (completed), steps, kimg, time_s: from the latest checkpoint, else the last log line."""
        p, last = self.progress, self.last
        if p:  # a run stopped inside an epoch flushed its log at that step: the log knows the fraction
            partial = p.get("pos") and last.get("step") == p["step"]
            return {"epochs": round(last["epoch"], 2) if partial else p["epoch"], "steps": p["step"],
                    "kimg": p["images"] / 1000, "time_s": round(p["wall"])}
        return {"epochs": round(last["epoch"], 2) if last else None, "steps": last.get("step"),
                "kimg": last.get("kimg"), "time_s": round(last["time"]) if "time" in last else None}

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def preset(self) -> str:
        return str(self.config.get("preset", "?"))

    @property
    def losses(self) -> list[dict[str, Any]]:
        return [r for r in self.history if "loss_d" in r]

    @property
    def last(self) -> dict[str, Any]:
        rows = self.losses
        return rows[-1] if rows else {}

    def last_epoch_losses(self) -> tuple[float, float]:
        """Mean D and G loss over the records of the last (possibly partial) epoch logged."""
        rows = self.losses
        if not rows:
            return math.nan, math.nan
        # the records logged during the last epoch begun ("epoch" counts fractions: 2.5 is half of
        # epoch 3); the 1e-9 keeps an epoch that ended exactly at 3.0 the third, not the fourth
        final = math.ceil(rows[-1]["epoch"] - 1e-9)
        tail = [r for r in rows if r["epoch"] > final - 1] or rows[-1:]
        def mean(key: str) -> float:  # a window with no generator step logs no loss_g
            values = [r[key] for r in tail if key in r]
            return sum(values) / len(values) if values else math.nan

        return mean("loss_d"), mean("loss_g")

    def metric_history(self) -> list[dict[str, Any]]:
        return [r for r in self.history if any(k.startswith("eval/") for k in r)]

    def eval_values(self) -> dict[str, float]:
        from ganforge.metrics.evaluation import flat_values

        return flat_values(self.eval) if self.eval and "metrics" in self.eval else {}

    def protocol(self, metric: str) -> tuple:
        """How `metric` (a key of eval.json, or a sub-value like pr_precision) was computed."""
        metrics = (self.eval or {}).get("metrics", {})
        base = metric if metric in metrics else metric.rsplit("_", 1)[0]  # pr_precision -> pr
        # the record's own fields over the evaluation's: a metric may say its N real or network itself
        rec = {**(self.eval or {}), **metrics.get(base, {})}
        return tuple(rec.get(k) for k in PROTOCOL_KEYS)

    def image(self, name: str) -> Optional[Path]:
        path = self.dir / name
        return path if path.is_file() else None

    def final_grid(self) -> Optional[Path]:
        grids = sorted((self.dir / "samples").glob("epoch_*.png"))
        return grids[-1] if grids else None


def read_run(run_dir: Path | str) -> RunInfo:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir}: not a ganforge run folder (no config.yaml)")
    text = cfg_path.read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{cfg_path}: not valid YAML ({exc.__class__.__name__})") from None
    history = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:  # a run killed mid-write leaves at most one partial last line
                if n < len(lines):
                    raise CheckpointError(f"{metrics}: line {n} is not JSON") from None
    record = None
    eval_path = run_dir / "eval.json"
    if eval_path.is_file():
        try:
            record = json.loads(eval_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{eval_path}: not valid UTF-8 JSON; move it away or run ganforge eval "
                                  "again") from None
        if not isinstance(record, dict) or not isinstance(record.get("metrics", {}), dict) or not all(
                isinstance(m, dict) for m in record.get("metrics", {}).values()):
            raise CheckpointError(f"{eval_path}: not an evaluation record (expected an object whose \"metrics\" "
                                  f"maps names to objects); move it away or run ganforge eval again")
    return RunInfo(dir=run_dir, config=config if isinstance(config, dict) else {}, config_text=text,
                   history=history, eval=record, progress=_latest_progress(run_dir))


def _latest_progress(run_dir: Path) -> dict[str, Any]:
    import torch

    from ganforge.training.checkpoint import STATE, list_checkpoints

    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
            return dict(state["progress"])
        except Exception:  # a damaged checkpoint: try the one before (load_latest's rule), else the log
            continue
    return {}
