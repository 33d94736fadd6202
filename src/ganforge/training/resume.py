"""What a resume may change, and which run `--resume auto` continues.

A checkpoint's position (epoch, batch inside the epoch's permutation, RNG states) means something
only for the batch size, seed, data and number of ranks it was written with, and its tensors fit
only the architecture and optimizer that made them. So a resume is checked before anything is
written:
- the architecture (model.*, except the EMA half-life and dropout), the optimizer's kind and the
  preset cannot change: one line names the key, old and new value;
- the batch size, seed, data set and number of processes change what the saved position means:
  refused unless the caller allows it (`--allow-change`), and then recorded in metrics.jsonl;
- everything else (epochs, max_steps, learning rates, logging, ...) may change and is recorded;
- a private run (`privacy.enabled`) keeps its privacy section, batch size and data (its noise was
  planned for them), and may not ask for more D steps than its budget allows (training/privacy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ganforge.config import Config, load_yaml, to_dict
from ganforge.errors import ConfigError
from ganforge.training.checkpoint import newest_checkpoint_time

SAFE_MODEL_KEYS = ("model.ema_kimg", "model.ema_rampup", "model.dropout")  # no tensor shape depends on them
FIXED = ("preset", "optim.name")                     # plus every other model.* key
MEANING = ("train.batch_size", "train.seed", "data.name", "data.root", "data.split", "data.size", "data.limit")


def _flat(cfg: Config) -> dict[str, Any]:
    out = {}
    for section, value in to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out


def changes(saved: Config, new: Config) -> dict[str, list]:
    """{key: [saved value, new value]} for every key that differs."""
    a, b = _flat(saved), _flat(new)
    return {k: [a.get(k), b[k]] for k in b if a.get(k) != b[k] and k != "description"}


def check_resume(run_dir: Path, new: Config, *, allow: bool = False) -> dict[str, list]:
    """The changes `new` makes to the config of `run_dir`, or ConfigError naming the first one it may not make."""
    saved = load_yaml(Path(run_dir) / "config.yaml")
    diff = changes(saved, new)
    for key, (old, value) in diff.items():
        if (saved.privacy.enabled or new.privacy.enabled) and (key.startswith("privacy.") or key in MEANING):
            raise ConfigError(f"--resume {run_dir}: {key} was {old!r}, now {value!r}; a private run's noise was "
                              f"planned for its privacy section, sampling rate and data (start a new run instead)")
        if key in FIXED or (key.startswith("model.") and key not in SAFE_MODEL_KEYS):
            what = {"preset": "the preset", "optim.name": "the optimizer"}.get(key, "the architecture")
            raise ConfigError(f"--resume {run_dir}: {key} was {old!r}, now {value!r}; a resume cannot change "
                              f"{what} (start a new run instead)")
        if key in MEANING and not allow:
            raise ConfigError(f"--resume {run_dir}: {key} was {old!r}, now {value!r}; that changes what the saved "
                              f"position means and breaks exact resumption (add --allow-change to accept it)")
    if new.privacy.enabled:
        from ganforge.training.ledger import check_resume as check_budget

        check_budget(run_dir, new)
    return diff


def check_ranks(state: dict, world_size: int, *, run_dir: Path, allow: bool = False) -> dict[str, list]:
    """{"world_size": [old, new]} when a checkpoint's number of processes differs (each rank's stride of
    the permutation is part of the saved position), or ConfigError unless `allow`."""
    ranks = state.get("world_size", 1)
    if ranks == world_size:
        return {}
    if not allow:
        raise ConfigError(f"--resume {run_dir}: it was trained by {ranks} processes, now {world_size}; that "
                          f"changes what the saved position means (add --allow-change to accept it)")
    return {"world_size": [ranks, world_size]}


def latest_run_dir(out: Path, name: str) -> Optional[Path]:
    """The run `out/name[-k]` whose newest checkpoint was written last (for `--resume auto`), or None.

    Judged by the checkpoints' own time, not the folders': an evaluation writing into an old run
    folder must not make it the one that continues.
    """
    candidates = [p for p in Path(out).glob(f"{name}*") if p.is_dir() and (p.name == name or
                  (p.name.startswith(name + "-") and p.name[len(name) + 1:].isdigit()))]
    timed = [(t, p) for p in candidates if (t := newest_checkpoint_time(p)) is not None]
    return max(timed)[1] if timed else None
