"""`ganforge eval RUN_DIR`: the record it writes and its one-line errors."""

import json

import pytest

from ganforge.cli import main
from ganforge.metrics.classifier import weights_path

TINY = ["--batch-size", "32", "--set", "data.limit=64", "--set", "model.g_channels=8", "--set", "model.d_channels=8"]


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert run_cli(["train", "--out", str(out), "--name", "dc", "--max-steps", "2", *TINY]) == 0
    assert run_cli(["train", "--out", str(out), "--name", "mlp", "--max-steps", "1", "--set", "model.arch=mlp",
                    *TINY]) == 0
    return out


def test_eval_writes_record_with_classifier_metrics(runs, capsys):
    if not weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier weights are missing (scripts/train_classifier.py)")
    run = runs / "dc"
    code = run_cli(["eval", str(run), "--metrics", "cls-fid,cls-is,cls-acc", "--n", "64", "--n-real", "128",
                    "--batch-size", "32", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "cls-fid" in text and "wrote" in text
    record = json.loads((run / "eval.json").read_text())
    fid = record["metrics"]["cls-fid"]
    assert fid["value"] > 0 and fid["n_generated"] == 64 and fid["n_real"] == 128
    assert fid["feature_network"] == "ganforge-mnist-classifier" and len(fid["feature_network_sha256"]) == 64
    assert record["metrics"]["cls-acc"]["value"] is None      # the demo run is unconditional
    assert record["dataset"] == "mnist-5k" and record["checkpoint"].endswith("step_000000002")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganforge: error:"), err
    return err[0]


def test_run_folder_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_cli(["eval", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert "no checkpoint" in _one_line_error(capsys)


def test_checkpoint_of_another_architecture(runs, capsys):
    other = sorted((runs / "mlp" / "checkpoints").iterdir())[-1]
    assert run_cli(["eval", str(runs / "dc"), "--checkpoint", str(other), "--device", "cpu"]) == 2
    assert "mlp checkpoint" in _one_line_error(capsys)


def test_dataset_without_the_chosen_split(runs, capsys):
    assert run_cli(["eval", str(runs / "dc"), "--split", "test", "--device", "cpu"]) == 2
    assert "no 'test' split" in _one_line_error(capsys)
