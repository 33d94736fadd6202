"""benchmarks/quality.py: one tiny preset trained and evaluated, and a record that says how."""

from __future__ import annotations

import json

import pytest

from benchmarks.quality import PROTOCOLS, main
from conftest import shared_path


@pytest.mark.slow  # trains and evaluates twice
def test_record_holds_metrics_protocol_machine_and_commands(tmp_path):
    record_file = tmp_path / "demo.json"
    main(["--preset", "demo", "--epochs", "1", "--set", "data.limit=256", "--set", "model.g_channels=8",
          "--set", "model.d_channels=8", "--set", "train.threads=1", "--n", "64", "--out", str(tmp_path / "runs"),
          "--record", str(record_file)])
    record = json.loads(record_file.read_text())
    assert record["preset"] == "demo" and record["dataset"] == "mnist-5k"
    assert record["protocol"]["reference_split"] == PROTOCOLS["mnist-5k"][0]
    assert record["protocol"]["n_generated"] == 64
    assert record["protocol"]["note"].startswith("64 generated vs the train split, not the protocol's 5,000")
    assert set(record["metrics"]) == {"cls-fid", "cls-is", "cls-acc"}  # the demo is conditional
    assert all(isinstance(v, float) for v in record["metrics"].values())
    assert record["kimg"] == 0.256 and record["train_seconds"] > 0
    assert record["machine"]["cpu"] and record["versions"]["torch"]
    assert record["machine"]["threads"] == 1  # the training's threads, not the benchmark process's
    train_cmd, eval_cmd = record["commands"]
    assert train_cmd.startswith("ganforge train --preset demo") and "--epochs 1" in train_cmd
    assert eval_cmd.startswith("ganforge eval") and "--n 64" in eval_cmd
    assert record["machine"]["load_average_before"] is not None
    assert record["machine"]["matmul_gflops_before"] > 0 and record["machine"]["matmul_gflops_after"] > 0

    # Evaluating the same run again: the training's load is unknown now, the note says how it ran.
    again = tmp_path / "again.json"
    main(["--preset", "demo", "--n", "64", "--out", str(tmp_path / "runs"), "--skip-train", "--train-note", "alone",
          "--record", str(again)])
    machine = json.loads(again.read_text())["machine"]
    assert machine["load_average_before"] is None and machine["train_note"] == "alone"
    assert machine["matmul_gflops_before"] is None  # nothing trained here: the host then is unknown
    assert machine["threads"] == 1  # from the run's saved config, not the evaluating process

    # Recording that evaluation again without repeating it; one that did not keep the protocol is refused.
    reused = tmp_path / "reused.json"
    main(["--preset", "demo", "--n", "64", "--out", str(tmp_path / "runs"), "--skip-train", "--skip-eval",
          "--record", str(reused)])
    assert json.loads(reused.read_text())["metrics"] == json.loads(again.read_text())["metrics"]
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "demo", "--n", "32", "--out", str(tmp_path / "runs"), "--skip-train", "--skip-eval",
              "--record", str(tmp_path / "refused.json")])
    assert "n 64" in str(exit_.value) and "n 32" in str(exit_.value) and not (tmp_path / "refused.json").exists()

    # A reference of a subset of the split: passed to ganforge eval and said in the record's protocol.
    subset = tmp_path / "subset.json"
    main(["--preset", "demo", "--n", "64", "--n-real", "48", "--out", str(tmp_path / "runs"), "--skip-train",
          "--record", str(subset)])
    record = json.loads(subset.read_text())
    assert record["protocol"]["n_real"] == 48 and "vs 48 images of the train split" in record["protocol"]["note"]
    assert "--n-real 48" in record["commands"][1]
    assert record["evaluation"]["metrics"]["cls-fid"]["n_real"] == 48  # the metric that compares with real images


def test_ablation_rows_resolve_and_each_technique_row_adds_one_change():
    from benchmarks.quality_ablation import ROWS
    from ganforge.config import apply_override, preset_config, to_dict, validate

    configs = {}
    for row, preset, sets in ROWS:
        cfg = preset_config(preset)
        for s in sets:
            apply_override(cfg, s)
        validate(cfg)
        configs[row] = {(g, k): v for g, sub in to_dict(cfg).items() if isinstance(sub, dict) for k, v in sub.items()}
    technique = [r for r, preset, sets in ROWS if sets]
    for before, after in zip(technique, technique[1:]):
        changed = {key for key, value in configs[after].items() if value != configs[before][key]}
        assert 1 <= len(changed) <= 3, (after, changed)  # the fast row changes batch and both learning rates


def test_ablation_table_lists_recorded_rows_and_rejects_unknown_ones(tmp_path, capsys):
    import pytest

    from benchmarks.quality_ablation import main as ablation
    from benchmarks.quality_ablation import table

    record = {"kimg": 180.0, "train_seconds": 301.4, "metrics": {"cls-fid": 1.234, "cls-is": 9.5}}
    (tmp_path / "a.json").write_text(json.dumps(record))
    text = table(["a", "missing"], out=tmp_path)
    assert "| a | 180 | 301 | 1.23 | 9.50 | – |" in text and "missing" not in text
    with pytest.raises(SystemExit):
        ablation(["--data-dir", str(tmp_path), "--only", "no-such-row"])
    assert "unknown row(s) no-such-row" in capsys.readouterr().err


@pytest.mark.slow  # trains, evaluates and audits
@pytest.mark.filterwarnings("ignore:privacy.sampling_seed", "ignore:Full backward hook is firing",
                            "ignore:Optimal order is the largest alpha")
def test_a_private_run_with_audit_records_its_ledger_and_the_attacks(tmp_path):
    record_file = tmp_path / "dp.json"
    # MNIST, not the demo's 5,000 digits: the audit needs the test split as its non-members.
    main(["--preset", "mnist-dp", "--epochs", "1", "--data-dir", str(shared_path("mnist")), "--set", "data.limit=256",
          "--set", "train.batch_size=32", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
          "--set", "train.threads=1", "--set", "privacy.delta=1e-3", "--set", "privacy.sampling_seed=5",
          "--set", "model.conditional=false",  # no classifiers to train in the audit: seconds, not minutes
          "--n", "64", "--metrics", "cls-fid", "--out", str(tmp_path / "runs"), "--record", str(record_file),
          "--audit", "--n 64 --spaces pixels --membership-n 64"])
    record = json.loads(record_file.read_text())
    ledger = json.loads((tmp_path / "runs" / "mnist-dp" / "privacy.json").read_text())
    assert record["privacy"]["epsilon"] == ledger["epsilon"] > 0 and record["privacy"]["delta"] == 1e-3
    assert record["kimg"] > 0 and record["steps"] == ledger["step"]
    membership = record["audit"]["membership"]
    assert 0 <= membership["discriminator"]["auc"] <= 1 and membership["privacy"]["epsilon"] == ledger["epsilon"]
    assert record["commands"][2].startswith("ganforge audit") and "--membership-n 64" in record["commands"][2]
