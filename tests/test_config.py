"""Config: presets, type-checked --set overrides, YAML round trip, one-line CLI errors."""

from __future__ import annotations

import pytest

from ganforge.cli import main
from ganforge.config import (
    PRESETS,
    Config,
    apply_override,
    from_dict,
    load_yaml,
    preset_config,
    save_yaml,
    to_dict,
    validate,
)
from ganforge.errors import ConfigError


def test_set_parses_types_and_short_keys():
    cfg = Config()
    apply_override(cfg, "model.z_dim=64")
    apply_override(cfg, "deterministic=true")
    apply_override(cfg, "lr_g=1e-3")
    apply_override(cfg, "data.root=none")
    assert (cfg.model.z_dim, cfg.train.deterministic, cfg.optim.lr_g, cfg.data.root) == (64, True, 1e-3, None)


@pytest.mark.parametrize("assignment, message", [
    ("model.zdim=3", "unknown config key 'model.zdim'"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("train.epochs=ten", "train.epochs='ten': expected an integer"),
    ("train.epochs=2.5", "expected an integer"),
    ("model.conditional=maybe", "expected true/false"),
    ("optim.lr_g=nan", "expected a number"),
    ("epochs", "expected key=value"),
])
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        apply_override(Config(), assignment)


def test_validate_refuses_out_of_range():
    cfg = Config()
    cfg.loss.label_smoothing = 1.5
    with pytest.raises(ConfigError, match="label_smoothing"):
        validate(cfg)


def test_yaml_round_trip(tmp_path):
    cfg = preset_config("mnist-dcgan")
    cfg.data.root = "/data/mnist"
    save_yaml(cfg, tmp_path / "c.yaml")
    assert to_dict(load_yaml(tmp_path / "c.yaml")) == to_dict(cfg)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key model.depth"):
        from_dict({"model": {"depth": 3}})


def test_every_preset_builds_and_validates():
    import ganforge.presets  # noqa: F401

    assert "demo" in PRESETS and "mnist-dcgan" in PRESETS
    for name in PRESETS.names():
        cfg = preset_config(name)
        validate(cfg)
        assert cfg.preset == name and cfg.description


def test_presets_command_lists_every_preset(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["presets"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS.names())


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "nope"], "unknown preset 'nope'; choose one of:"),
    (["train", "--set", "model.widht=3"], "unknown config key 'model.widht'"),
    (["train", "--set", "train.batch_size=-4"], "train.batch_size must be at least 1"),
    (["train", "--set", "loss.name=wasserstein", "--max-steps", "1"], "unknown loss 'wasserstein'"),
    (["train", "--set", "optim.name=rmsprop", "--max-steps", "1"], "unknown optimizer 'rmsprop'"),
    (["train", "--resume", "/nonexistent/run"], "not a run folder"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("assignment, message", [
    ("optim.beta1=1.5", "optim.beta1=1.5: must be between 0 and"),
    ("optim.beta2=-0.1", "optim.beta2=-0.1: must be between 0 and"),
    ("optim.momentum=-1", "optim.momentum=-1.0: must be between 0 and"),
    ("train.threads=-1", "train.threads=-1: must be between 0 and 1024"),
    ("train.seed=-1", "train.seed=-1: must be between 0 and 4.29497e+09"),
    ("train.seed=99999999999999999999999", "train.seed=99999999999999999999999: must be between"),
    ("model.z_dim=1000000000", "model.z_dim=1000000000: must be between 1 and 4096"),
    ("model.g_channels=100000", "model.g_channels=100000: must be between 1 and 1024"),
    ("train.num_samples=100000000", "train.num_samples=100000000: must be between 1 and 1024"),
    ("train.batch_size=100000000", "train.batch_size=100000000: must be between 1 and 65536"),
])
def test_values_the_libraries_refuse_are_one_line_before_any_work(assignment, message, capsys, tmp_path):
    """Each of these passed the type check and ended in a traceback (or an allocation failure)."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path), "--max-steps", "1", "--set", assignment])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before the run folder was made


def test_train_data_dir_the_preset_does_not_read(capsys, tmp_path):
    """The default preset (mnist-5k) with a folder of MNIST IDX files."""
    idx = tmp_path / "mnist"
    idx.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (idx / f"{stem}.gz").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "runs"), "--data-dir", str(idx)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "dataset 'mnist-5k' does not read it" in err and "mnist-dcgan" in err
    assert not list((tmp_path / "runs").glob("*"))  # no run folder was made
