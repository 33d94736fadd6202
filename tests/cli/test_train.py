"""Starting and resuming from the command line: flag/--set disagreements, absolute data paths, no empty
run folders, finished runs, and help text for every option."""

from __future__ import annotations

import argparse
import hashlib

import pytest
import yaml

from ganforge.cli import main, make_parser
from ganforge.config import load_yaml


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "3", "--set", "epochs=4"], "--epochs 3 and --set epochs=4 disagree about train.epochs"),
    (["--batch-size", "32", "--set", "train.batch_size=16"], "disagree about train.batch_size"),
    (["--device", "cpu", "--set", "device=auto"], "--device cpu and --set device=auto disagree"),
    (["--data-dir", "a", "--set", "data.root=b"], "disagree about data.root"),
])
def test_flag_and_set_that_disagree_are_one_line(argv, message, tmp_path, capsys):
    assert run_cli(["train", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_flag_and_set_that_agree_are_fine(tmp_path, tiny_args):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "1", "--set", "max_steps=1",
                    "--epochs", "2", "--set", "train.epochs=2.0", *tiny_args]) == 0
    cfg = load_yaml(tmp_path / "r" / "config.yaml")
    assert (cfg.train.max_steps, cfg.train.epochs) == (1, 2)


def test_relative_data_dir_is_stored_absolute_and_found_from_elsewhere(tmp_path, tiny_args, monkeypatch):
    # mnist-5k reads a data dir holding its CSV: copy the shipped one there, then start from tmp_path.
    from ganforge.data.mnist5k import FILE, _packaged

    data = tmp_path / "data"
    data.mkdir()
    (data / FILE).write_bytes(_packaged().read_bytes())
    monkeypatch.chdir(tmp_path)
    assert run_cli(["train", "--out", "runs", "--name", "r", "--data-dir", "data", "--max-steps", "1",
                    *tiny_args]) == 0
    stored = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())["data"]["root"]
    assert stored == str(data)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert run_cli(["train", "--resume", str(tmp_path / "runs" / "r"), "--max-steps", "2"]) == 0
    assert load_yaml(tmp_path / "runs" / "r" / "config.yaml").data.root == str(data)


@pytest.mark.parametrize("argv, message", [
    (["--set", "loss.name=wasserstein"], "unknown loss 'wasserstein'"),
    (["--preset", "mnist-dcgan", "--data-dir", "nowhere"], "no such file or directory"),
    (["--set", "model.conditional=true", "--set", "data.name=folder", "--data-dir", "."], ""),
])
def test_a_refused_start_leaves_no_run_folder(argv, message, tmp_path, tiny_args, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert run_cli(["train", "--out", "runs", *tiny_args, *argv]) == 2
    assert message in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--set", "loss.name=wasserstein"], "unknown loss 'wasserstein'"),  # refused with the config
    (["--preset", "mnist-dcgan", "--data-dir", "nowhere"], "no such file or directory"),  # by the trainer
])
def test_a_refused_start_removes_the_out_folders_it_made(argv, message, tmp_path, tiny_args, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    assert run_cli(["train", "--out", "kept/new/deeper", *tiny_args, *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and list((tmp_path / "kept").iterdir()) == []


def _digest(folder):
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_says_so_and_rewrites_nothing(tmp_path, tiny_args, capsys):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--epochs", "1", *tiny_args]) == 0
    run = tmp_path / "r"
    before = _digest(run)
    capsys.readouterr()
    assert run_cli(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "is complete: 1 of 1 epochs" in out
    assert f"ganforge train --resume {run} --epochs 2" in out
    assert _digest(run) == before
    # --resume auto finds the same run and says the same; --epochs 2 then trains on.
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--resume", "auto"]) == 0
    assert "is complete" in capsys.readouterr().out and _digest(run) == before
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "is complete" not in capsys.readouterr().out
    assert load_yaml(run / "config.yaml").train.epochs == 2


def test_a_run_stopped_by_max_steps_is_complete_until_given_more(tmp_path, tiny_args, capsys):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "2", *tiny_args]) == 0
    before = _digest(tmp_path / "r")
    capsys.readouterr()
    assert run_cli(["train", "--resume", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "reached train.max_steps=2" in out and "--max-steps 4" in out
    assert _digest(tmp_path / "r") == before


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_with_its_choices():
    commands = _subcommands(make_parser())
    assert {"train", "eval", "presets", "datasets"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"`ganforge {name}` has no description"
        help_text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"ganforge {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{what}: no help text"
            if action.choices:
                assert "{" + ",".join(map(str, action.choices)) + "}" in help_text, f"{what}: choices not shown"


def test_eval_help_names_every_metric():
    from ganforge.metrics import METRICS

    metrics = next(a for a in _subcommands(make_parser())["eval"]._actions if "--metrics" in a.option_strings)
    assert all(key in metrics.help.replace(",", " ").split() for key in METRICS.names())
