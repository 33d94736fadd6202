"""benchmarks/quality.py: one tiny preset trained and evaluated, and a record that says how."""

from __future__ import annotations

import json

from benchmarks.quality import PROTOCOLS, main


def test_record_holds_metrics_protocol_machine_and_commands(tmp_path):
    record_file = tmp_path / "demo.json"
    main(["--preset", "demo", "--epochs", "1", "--set", "data.limit=256", "--set", "model.g_channels=8",
          "--set", "model.d_channels=8", "--set", "train.threads=1", "--n", "64", "--out", str(tmp_path / "runs"),
          "--record", str(record_file)])
    record = json.loads(record_file.read_text())
    assert record["preset"] == "demo" and record["dataset"] == "mnist-5k"
    assert record["protocol"]["reference_split"] == PROTOCOLS["mnist-5k"][0]
    assert record["protocol"]["n_generated"] == 64
    assert set(record["metrics"]) == {"cls-fid", "cls-is", "cls-acc"}  # the demo is conditional
    assert all(isinstance(v, float) for v in record["metrics"].values())
    assert record["kimg"] == 0.256 and record["train_seconds"] > 0
    assert record["machine"]["cpu"] and record["versions"]["torch"]
    train_cmd, eval_cmd = record["commands"]
    assert train_cmd.startswith("ganforge train --preset demo") and "--epochs 1" in train_cmd
    assert eval_cmd.startswith("ganforge eval") and "--n 64" in eval_cmd
