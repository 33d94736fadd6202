"""`ganforge eval RUN_DIR`: the record it writes and its one-line errors."""

import json

import pytest

from conftest import TINY, run_cli
from ganforge.metrics.classifier import weights_path


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
    assert 0 <= record["metrics"]["cls-acc"]["value"] <= 1   # the demo is conditional: the asked class's share
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


CLS = ["--metrics", "cls-fid,cls-is", "--n", "40", "--n-real", "64", "--batch-size", "20", "--device", "cpu"]


def test_every_evaluation_is_kept(runs, capsys):
    """eval/<checkpoint>-<time>.json per evaluation, eval.json the latest; an older eval.json kept."""
    run = runs / "mlp"
    (run / "eval.json").write_text(json.dumps({"checkpoint": "latest", "metrics": {"old": {"value": 1}}}))
    assert run_cli(["eval", str(run), *CLS]) == 0
    assert run_cli(["eval", str(run), *CLS, "--seed", "1"]) == 0
    kept = sorted((run / "eval").glob("*.json"))
    assert len(kept) == 3, kept
    records = [json.loads(p.read_text()) for p in kept]
    assert sum("old" in r["metrics"] for r in records) == 1
    new = [p for p, r in zip(kept, records) if "old" not in r["metrics"]]
    assert all(p.name.startswith("step_000000001-") for p in new)
    assert sorted(json.loads(p.read_text())["seed"] for p in new) == [0, 1]
    assert json.loads((run / "eval.json").read_text())["seed"] == 1   # the latest
    assert "wrote " in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--metrics", ""], "--metrics '' names no metric; choose from"),
    (["--metrics", " , "], "names no metric"),
    (["--metrics", "fid,nope"], "unknown metric 'nope'"),
    (["--n", "0"], "--n 0: generated images must be between 2 and"),
    (["--n", "1000000000"], "--n 1000000000: generated images must be between 2 and"),
    (["--n-real", "1"], "--n-real 1: real images must be between 2"),
    (["--batch-size", "0"], "--batch-size 0: must be between 1 and"),
    (["--device", "gpu"], "--device 'gpu': choose auto, cpu, cuda, cuda:N or mps"),
    (["--json", "{tmp}"], "is a folder; give a file name"),
    (["--json", "{tmp}/file.txt/eval.json"], "cannot write there"),
    (["--json", "/dev/null"], "--json /dev/null: not a regular file"),
    (["--data-dir", "{tmp}"], "dataset 'mnist-5k' does not read it"),
    (["--data-dir", "{tmp}/missing"], "missing: no such file or directory"),
])
def test_arguments_outputs_and_reference_data_are_checked_before_any_image(runs, args, message, capsys, tmp_path,
                                                                           monkeypatch):
    """One line each, and no image is generated first: an hour of Inception features never ends in a
    refusal that could have come at the start."""
    import ganforge.metrics.evaluation as ev

    def no_generation(*a, **k):
        raise AssertionError("images were generated before the arguments were checked")

    monkeypatch.setattr(ev, "make_generate", no_generation)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_cli(["eval", str(runs / "dc"), "--device", "cpu", *args]) == 2
    assert message in _one_line_error(capsys)


def test_cuda_device_without_cuda_is_one_line(runs, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert run_cli(["eval", str(runs / "dc"), "--device", "cuda", "--metrics", "cls-fid"]) == 2
    assert "--device cuda: CUDA is not available" in _one_line_error(capsys)


def test_unwritable_cache_trains_and_evaluates_with_one_warning(tmp_path, monkeypatch, caplog):
    """The cache is optional: an unwritable one costs a warning and a decode, never the run."""
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GANFORGE_CACHE", str(blocked))
    monkeypatch.setattr("ganforge.data.cache._warned", False)
    with caplog.at_level("WARNING", logger="ganforge.data"):
        assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "1", *TINY]) == 0
        assert run_cli(["eval", str(tmp_path / "r"), *CLS]) == 0
    warned = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warned) == 1 and "going on without a cache" in warned[0], warned


@pytest.mark.slow  # the real Inception on a CPU
def test_default_metrics_on_a_real_run_with_the_real_inception(runs, capsys):
    """Only computable metrics by default (the rest named once), an estimate, KID without a fake spread.
    A tiny N keeps the real Inception network (about 15 images/s on 2 cores) to a few seconds."""
    from ganforge.metrics.evaluation import context

    try:
        ctx = context(classifier="mnist-5k")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no Inception network here: {e}")
    if ctx.networks["inception"] is not None or ctx.networks["classifier"] is not None:
        pytest.skip(f"a feature network is missing here: {ctx.networks}")
    run = runs / "dc"
    assert run_cli(["eval", str(run), "--n", "6", "--n-real", "6", "--batch-size", "3", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    left_out = [line for line in captured.err.splitlines() if line.startswith("not computed here:")]
    assert len(left_out) == 1 and "is (the Inception Score needs" in left_out[0]
    assert "cls-acc" not in left_out[0]  # the demo is conditional, so class accuracy can be computed
    assert any(line.startswith("estimate: 3 more generated images + 6 real through inception") for line in
               captured.err.splitlines()), captured.err
    record = json.loads((run / "eval.json").read_text())
    assert set(record["metrics"]) == {"fid", "kid", "pr", "cls-fid", "cls-is", "cls-acc"}
    assert all(r["value"] is not None for r in record["metrics"].values())
    kid = record["metrics"]["kid"]
    assert "std" not in kid and "no spread over subsets" in kid["note"]
    assert "n/a" not in captured.out and "no spread over subsets" in captured.out


def test_under_torchrun_the_reference_is_decoded_once_per_host(monkeypatch):
    # The real images are loaded through the ranks' Dist, so that on a cache miss one process per host
    # decodes them (data.cache's per-host lock) instead of every rank at once.
    import ganforge.data
    from ganforge.cli.eval import _Reference

    seen = {}

    class Loaded:
        images = "decoded"

    def fake_load(**kw):
        seen.update(kw)
        return Loaded()

    monkeypatch.setattr(ganforge.data, "load_dataset", fake_load)
    dist = object()
    assert _Reference("mnist", 0, "test", "/data", "key", "digest", "mnist").images(dist) == "decoded"
    assert seen["dist"] is dist and seen["split"] == "test"
