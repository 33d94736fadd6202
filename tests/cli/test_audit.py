"""`ganforge audit RUN_DIR`: the files it writes, the verdicts it prints and its one-line errors."""

import json

import pytest

from conftest import shared_path
from ganforge.cli import main
from ganforge.metrics.classifier import weights_path

TINY = ["--batch-size", "32", "--set", "data.limit=64", "--set", "model.g_channels=8", "--set", "model.d_channels=8"]


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganforge: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = shared_path("mnist")
    out = tmp_path_factory.mktemp("runs")
    # an unconditional DCGAN on 64 MNIST digits: MNIST has the test split the audit compares with
    assert run_cli(["train", "--preset", "mnist-cgan", "--data-dir", str(root), "--out", str(out), "--name", "u",
                    "--max-steps", "1", "--set", "model.conditional=false", *TINY]) == 0
    return out / "u"


def test_audit_writes_json_and_png_and_prints_verdicts(run, tmp_path, capsys):
    if not weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier weights are missing")
    assert run_cli(["audit", str(run), "--n", "32", "--device", "cpu", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "utility       not applicable: the model is unconditional" in text
    assert "memorisation  classifier:" in text and "coverage      classifier:" in text
    record = json.loads((tmp_path / "audit.json").read_text())
    p = record["protocol"]
    assert p["n_generated"] == 32 and p["reference_split"] == "test" and p["n_train"] == 64
    assert p["checkpoint"] == "latest" and p["arch"] == "dcgan" and p["ganforge_version"]
    mem = record["memorisation"]["pixels"]
    assert mem["n_generated"] == 32 and mem["seed"] == 0 and mem["feature_space"] == "pixels"
    assert 0 <= mem["generated"]["authenticity"] <= 1
    assert record["coverage"]["classifier"]["feature_space"].startswith("ganforge-mnist-classifier")
    assert len(record["coverage"]["class_histogram"]["generated"]) == 10
    assert (tmp_path / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_cli(["audit", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert "no checkpoint" in _one_line_error(capsys)


def test_training_split_is_not_a_held_out_split(run, capsys):
    assert run_cli(["audit", str(run), "--split", "train", "--device", "cpu"]) == 2
    assert "held-out split other than train; 'mnist' has test" in _one_line_error(capsys)


def test_n_larger_than_the_training_set(run, capsys):
    assert run_cli(["audit", str(run), "--n", "65", "--device", "cpu"]) == 2
    assert "--n 65 is larger than the 64 training images of mnist" in _one_line_error(capsys)


def test_unknown_feature_space(run, capsys):
    assert run_cli(["audit", str(run), "--n", "32", "--spaces", "pixels,clip", "--device", "cpu"]) == 2
    assert "unknown feature space 'clip'" in _one_line_error(capsys)
