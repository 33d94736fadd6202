"""The search-space file of `ganforge sweep`: which config keys to search, over what, against which metric.

    objective: {metric: cls-fid, direction: minimize}    # one value of the periodic evaluation
    pruner: {name: median, startup_trials: 5, warmup_kimg: 0}   # or `pruner: none`
    seed: 0                                               # the sampler's seed (optional)
    space:
      optim.lr_g: {low: 1e-4, high: 1e-3, log: true}      # a range: suggest_float / suggest_int by the key's type
      optim.beta1: {choices: [0.0, 0.5]}                  # a list: suggest_categorical
      loss.n_critic: {low: 1, high: 5}

Every key is checked against the typed config (`ganforge.config`), every bound and choice against the
key's type and the config's own range checks, so a bad file is refused in one line per problem before
any trial starts. Sampling is Optuna's (Akiba et al. 2019); `log: true` samples uniformly in log space,
as learning rates usually are searched (Bergstra & Bengio 2012).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ganforge.config import Config, apply_override, key_type, validate
from ganforge.errors import ConfigError

# The value of the periodic evaluation each objective reads (metrics.jsonl's `eval/<name>`), the metric
# that computes it (train.eval_metrics) and which way is better. Precision and recall are one metric, `pr`.
OBJECTIVES = {
    "fid": ("fid", "minimize"), "kid": ("kid", "minimize"), "is": ("is", "maximize"),
    "pr_precision": ("pr", "maximize"), "pr_recall": ("pr", "maximize"),
    "cls-fid": ("cls-fid", "minimize"), "cls-is": ("cls-is", "maximize"), "cls-acc": ("cls-acc", "maximize"),
}
# Keys the sweep sets for every trial itself: the metric it evaluates and the threads it splits the cores into.
SET_BY_SWEEP = ("train.eval_metrics", "train.threads")
TOP_KEYS = ("objective", "pruner", "seed", "space")
PRUNERS = ("median", "none")


class SpaceError(ConfigError):
    """A search-space file with problems: one line each, in `lines`."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Param:
    key: str                              # the full config key, "optim.lr_g"; also Optuna's parameter name
    kind: type                            # bool, int, float or str: the config field's type
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None

    def sample(self, trial) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None  # a range, by construction
        if self.kind is int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Space:
    path: Path
    metric: str                           # a key of OBJECTIVES
    direction: str                        # minimize | maximize
    params: tuple[Param, ...]
    pruner: str = "median"
    startup_trials: int = 5               # Optuna's MedianPruner defaults
    warmup_kimg: float = 0.0
    seed: Optional[int] = None

    @property
    def eval_metric(self) -> str:
        return OBJECTIVES[self.metric][0]

    def sample(self, trial) -> dict[str, Any]:
        return {p.key: p.sample(trial) for p in self.params}

    def describe(self) -> dict:
        """What a study was started with: a continuation with another space or objective is refused."""
        return {"metric": self.metric, "direction": self.direction, "pruner": self.pruner,
                "startup_trials": self.startup_trials, "warmup_kimg": self.warmup_kimg,
                "params": [{k: v for k, v in dataclasses.asdict(p).items() if k != "kind" and v is not None}
                           for p in self.params]}


def set_value(value: Any) -> str:
    """`value` as `--set` and config files read it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def load_space(path: Path, base: Config) -> Space:
    """Read and check a search-space file against the config `base`; every problem in one SpaceError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--space {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--space {path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--space {path}: expected a mapping with {', '.join(TOP_KEYS)}")
    errors: list[str] = []
    for key in data:
        if key not in TOP_KEYS:
            errors.append(f"{path}: unknown entry {key!r}; the file has {', '.join(TOP_KEYS)}")
    metric, direction = _objective(data.get("objective"), path, errors)
    pruner = _pruner(data.get("pruner", "median"), path, errors)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        errors.append(f"{path}: seed {seed!r}: must be a whole number between 0 and {2**32 - 1}")
    params = _params(data.get("space"), path, base, errors)
    if errors:
        raise SpaceError(errors)
    return Space(path=path, metric=metric, direction=direction, params=tuple(params), seed=seed, **pruner)


def _objective(spec: Any, path: Path, errors: list[str]) -> tuple[str, str]:
    if not isinstance(spec, dict) or "metric" not in spec:
        errors.append(f"{path}: objective: expected {{metric: NAME, direction: minimize|maximize}}; "
                      f"metrics: {', '.join(OBJECTIVES)}")
        return "", ""
    for key in spec:
        if key not in ("metric", "direction"):
            errors.append(f"{path}: objective: unknown entry {key!r}; it has metric and direction")
    metric = str(spec["metric"])
    if metric not in OBJECTIVES:
        hint = "; pr gives two values: choose pr_precision or pr_recall" if metric == "pr" else ""
        errors.append(f"{path}: objective.metric {metric!r}: not a value of the periodic evaluation; choose one "
                      f"of {', '.join(OBJECTIVES)}{hint}")
        return metric, ""
    direction = str(spec.get("direction", OBJECTIVES[metric][1]))
    if direction not in ("minimize", "maximize"):
        errors.append(f"{path}: objective.direction {direction!r}: choose minimize or maximize")
    return metric, direction


def _pruner(spec: Any, path: Path, errors: list[str]) -> dict:
    if spec in (None, "none", False):
        return {"pruner": "none"}
    if spec == "median":
        return {"pruner": "median"}
    if not isinstance(spec, dict) or spec.get("name", "median") not in PRUNERS:
        errors.append(f"{path}: pruner {spec!r}: give none, median, or "
                      f"{{name: median, startup_trials: N, warmup_kimg: K}}")
        return {}
    out = {"pruner": spec.get("name", "median")}
    for key, value in spec.items():
        if key == "name":
            continue
        if key == "startup_trials" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[key] = value
        elif key == "warmup_kimg" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and value >= 0:
            out[key] = float(value)
        elif key in ("startup_trials", "warmup_kimg"):
            errors.append(f"{path}: pruner.{key} {value!r}: must be a number ≥ 0"
                          + (" (a whole one)" if key == "startup_trials" else ""))
        else:
            errors.append(f"{path}: pruner: unknown entry {key!r}; it has name, startup_trials, warmup_kimg")
    return out


def _params(space: Any, path: Path, base: Config, errors: list[str]) -> list[Param]:
    if not isinstance(space, dict) or not space:
        errors.append(f"{path}: space: expected a mapping of config keys to a range {{low, high}} or {{choices}}")
        return []
    params, seen = [], set()
    for key, spec in space.items():
        try:
            full, tp = key_type(base, str(key))
        except ConfigError as exc:
            first = str(exc).split(";")[0]  # the list of every valid key would bury the other problems
            errors.append(f"{path}: space.{key}: {first}; `ganforge train --help` and config.py list the keys")
            continue
        where = f"{path}: space.{full}"
        if full in SET_BY_SWEEP or full in seen:
            errors.append(f"{where}: " + ("set by the sweep for every trial; leave it out" if full in SET_BY_SWEEP
                                          else "given twice"))
            continue
        seen.add(full)
        param = _param(full, _plain(tp), spec, where, errors)
        if param is not None and _within_limits(param, base, where, errors):
            params.append(param)
    return params


def _plain(tp: Any) -> Any:
    """Optional[X] -> X: a sweep assigns values, never None."""
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _typed(key: str, value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    from ganforge.config import parse_value

    try:  # YAML reads 1e-4 as text; the config's own parser reads it as --set would
        return parse_value(key, set_value(value) if not isinstance(value, str) else value, tp)
    except ConfigError as exc:
        errors.append(f"{where}: {value!r}: {str(exc).split(': ', 1)[-1]}, the type of {key}")
        return None


def _param(key: str, tp: Any, spec: Any, where: str, errors: list[str]) -> Optional[Param]:
    if not isinstance(spec, dict):
        errors.append(f"{where}: expected {{low: A, high: B}} (log: true, step: S optional) or {{choices: [...]}}")
        return None
    unknown = set(spec) - {"choices", "low", "high", "log", "step"}
    if unknown or ("choices" in spec) == ("low" in spec or "high" in spec):
        errors.append(f"{where}: give either choices or low and high (with log, step); got {', '.join(map(str, spec))}")
        return None
    n_errors = len(errors)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            errors.append(f"{where}: choices must be a non-empty list")
            return None
        typed = tuple(_typed(key, c, tp, where, errors) for c in choices)
        if len(set(typed)) < len(typed) and len(errors) == n_errors:
            errors.append(f"{where}: choices repeat a value")
        return Param(key, tp, choices=typed) if len(errors) == n_errors else None
    return _range(key, tp, spec, where, errors)


def _range(key: str, tp: Any, spec: dict, where: str, errors: list[str]) -> Optional[Param]:
    if tp not in (int, float):
        kind = {bool: "true/false", str: "text"}.get(tp, str(tp))
        errors.append(f"{where}: a range needs a numeric key; {key} is {kind}: give choices")
        return None
    if "low" not in spec or "high" not in spec:
        errors.append(f"{where}: a range needs both low and high")
        return None
    n_errors = len(errors)
    low, high = (_typed(key, spec[b], tp, where, errors) for b in ("low", "high"))
    step = _typed(key, spec["step"], tp, where, errors) if spec.get("step") is not None else None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        errors.append(f"{where}: log {log!r}: must be true or false")
    if len(errors) > n_errors:
        return None
    assert low is not None and high is not None
    if low >= high:
        errors.append(f"{where}: low {low:g} >= high {high:g}; a range needs low < high")
    if log is True and low <= 0:
        errors.append(f"{where}: log with low {low:g}: a log scale needs low > 0")
    if step is not None and (step <= 0 or log is True):
        errors.append(f"{where}: step {step:g}: must be > 0, and cannot be combined with log")
    if len(errors) > n_errors:
        return None
    return Param(key, tp, low=low, high=high, log=log is True, step=step)


def _within_limits(param: Param, base: Config, where: str, errors: list[str]) -> bool:
    """Every choice, and both ends of a range, must pass the config's own checks (config.validate)."""
    values = param.choices if param.choices is not None else (param.low, param.high)
    for value in values:
        cfg = copy.deepcopy(base)
        try:
            apply_override(cfg, f"{param.key}={set_value(value)}")
            validate(cfg)
        except ConfigError as exc:
            errors.append(f"{where}: {set_value(value)} is refused by the config: {exc}")
            return False
    return True
