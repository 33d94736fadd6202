"""The search-space file: each problem one line naming the file and key, and sampling within what it says."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from ganforge.config import preset_config
from ganforge.errors import ConfigError
from ganforge.sweep.space import OBJECTIVES, SpaceError, load_space

GOOD = {"objective": {"metric": "cls-fid"},
        "space": {"optim.lr_g": {"low": "1e-4", "high": "1e-3", "log": True},
                  "optim.beta1": {"choices": [0.0, 0.5]},
                  "model.g_channels": {"choices": [32, 64]},
                  "loss.n_critic": {"low": 1, "high": 5},
                  "model.dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
                  "loss.name": {"choices": ["bce", "hinge"]},
                  "model.conditional": {"choices": [True, False]}}}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _errors(tmp_path: Path, space: dict, objective=None) -> list[str]:
    data = {"objective": objective or {"metric": "cls-fid"}, "space": space}
    with pytest.raises(SpaceError) as exc:
        load_space(_write(tmp_path, data), preset_config("demo"))
    return exc.value.lines


@pytest.mark.parametrize("entry, message", [
    ({"optim.lr_gg": {"low": 1e-4, "high": 1e-3}}, "space.optim.lr_gg: unknown config key 'optim.lr_gg'"),
    ({"optim.lr_g": {"low": 1e-3, "high": 1e-4}}, "low 0.001 >= high 0.0001; a range needs low < high"),
    ({"optim.lr_g": {"low": 0, "high": 1e-3, "log": True}}, "log with low 0: a log scale needs low > 0"),
    ({"model.g_channels": {"low": 16.5, "high": 64}}, "space.model.g_channels: 16.5: expected an integer"),
    ({"model.conditional": {"low": 0, "high": 1}}, "model.conditional is true/false: give choices"),
    ({"model.d_norm": {"low": 0, "high": 1}}, "model.d_norm is text: give choices"),
    ({"model.z_dim": {"choices": [64, "wide"]}}, "space.model.z_dim: 'wide': expected an integer"),
    ({"optim.beta1": {"choices": [0.0, 1.5]}}, "optim.beta1=1.5: must be between 0 and 0.999999"),
    ({"optim.lr_g": {"low": 1e-4}}, "a range needs both low and high"),
    ({"optim.lr_g": {"choices": [1e-4], "low": 1e-4}}, "give either choices or low and high"),
    ({"optim.lr_g": {"choices": []}}, "choices must be a non-empty list"),
    ({"optim.lr_g": 0.001}, "space.optim.lr_g: expected {low: A, high: B}"),
    ({"optim.lr_g": {"low": 1e-4, "high": 1e-3, "log": True, "step": 1e-4}}, "cannot be combined with log"),
    ({"train.threads": {"choices": [1, 2]}}, "space.train.threads: set by the sweep for every trial"),
    ({"ema_kimg": {"low": 0, "high": 10}, "model.ema_kimg": {"low": 1, "high": 2}},
     "space.model.ema_kimg: given twice"),
])
def test_each_problem_is_one_line_naming_the_file_and_key(tmp_path, entry, message):
    lines = _errors(tmp_path, entry)
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(str(tmp_path / "space.yaml")), lines


@pytest.mark.parametrize("objective, message", [
    ({"metric": "cls-fidd"}, "objective.metric 'cls-fidd': not a value of the periodic evaluation"),
    ({"metric": "pr"}, "choose pr_precision or pr_recall"),
    ({"metric": "fid", "direction": "down"}, "objective.direction 'down': choose minimize or maximize"),
    ({"metric": "fid", "n": 5}, "objective: unknown entry 'n'"),
])
def test_an_unknown_metric_or_direction_is_one_line(tmp_path, objective, message):
    lines = _errors(tmp_path, {"optim.lr_g": {"choices": [1e-4]}}, objective)
    assert len(lines) == 1 and message in lines[0], lines


def test_every_problem_of_a_file_is_reported_each_on_its_own_line(tmp_path):
    lines = _errors(tmp_path, {"optim.lr_gg": {"low": 1, "high": 2}, "optim.lr_g": {"low": 1e-3, "high": 1e-4},
                               "model.g_channels": {"low": 16.5, "high": 64}}, {"metric": "nope"})
    assert len(lines) == 4 and all("\n" not in line for line in lines)


@pytest.mark.parametrize("text, message", [("space: [1, 2", "not valid YAML at line"), ("- 1\n", "expected a mapping"),
                                           ("", "expected a mapping")])
def test_an_unreadable_file_is_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_space(_write(tmp_path, text), preset_config("demo"))


def test_the_natural_direction_of_each_metric_is_the_default(tmp_path):
    for metric, (_, direction) in OBJECTIVES.items():
        space = load_space(_write(tmp_path, {"objective": {"metric": metric}, "space": GOOD["space"]}),
                           preset_config("demo"))
        assert space.direction == direction
    assert OBJECTIVES["cls-fid"][1] == "minimize" and OBJECTIVES["cls-acc"][1] == "maximize"


def test_every_objective_is_computed_by_a_registered_metric():
    from ganforge.metrics import METRICS

    for eval_metric, _ in OBJECTIVES.values():
        METRICS.get(eval_metric)


def test_samples_stay_in_their_ranges_on_their_scale_and_among_their_choices(tmp_path):
    space = load_space(_write(tmp_path, GOOD), preset_config("demo"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    draws = []
    for _ in range(200):
        trial = study.ask()
        draws.append(space.sample(trial))
        study.tell(trial, 0.0)
    lr = [d["optim.lr_g"] for d in draws]
    assert all(1e-4 <= v <= 1e-3 for v in lr)
    # log-uniform: half of the draws below the geometric mean (3.16e-4), not the arithmetic one (5.5e-4)
    below = sum(v < math.sqrt(1e-4 * 1e-3) for v in lr) / len(lr)
    assert 0.4 < below < 0.6
    assert {d["optim.beta1"] for d in draws} == {0.0, 0.5}
    assert {d["model.g_channels"] for d in draws} == {32, 64}
    assert {d["loss.n_critic"] for d in draws} == {1, 2, 3, 4, 5}
    assert all(type(d["loss.n_critic"]) is int for d in draws)
    assert {round(d["model.dropout"], 6) for d in draws} <= {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    assert {d["loss.name"] for d in draws} == {"bce", "hinge"}
    assert {d["model.conditional"] for d in draws} == {True, False}


def test_a_fixed_sampler_seed_gives_the_same_trials(tmp_path):
    space = load_space(_write(tmp_path, GOOD), preset_config("demo"))

    def draws(seed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for _ in range(5):
            trial = study.ask()
            out.append(space.sample(trial))
            study.tell(trial, 1.0)
        return out

    assert draws(7) == draws(7) != draws(8)


def test_short_keys_become_full_keys(tmp_path):
    space = load_space(_write(tmp_path, {"objective": {"metric": "fid"}, "space": {"lr_g": {"choices": [1e-4]}}}),
                       preset_config("demo"))
    assert [p.key for p in space.params] == ["optim.lr_g"]
