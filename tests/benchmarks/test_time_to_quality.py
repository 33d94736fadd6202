"""benchmarks/time_to_quality.py: the ratio from two curves, and a tiny end-to-end record."""

from __future__ import annotations

import json

import pytest

from benchmarks.time_to_quality import main, times_sooner


def test_times_sooner_is_the_baseline_time_over_the_first_time_we_reach_its_final_score():
    baseline = [(100.0, 80.0), (200.0, 50.0), (300.0, 40.0)]
    ours = [(30.0, 60.0), (60.0, 39.0), (90.0, 20.0)]
    r = times_sooner(baseline, ours)
    assert r == {"target": 40.0, "baseline_seconds": 300.0, "ours_seconds": 60.0, "ours_score": 39.0,
                 "times_sooner": 5.0}
    assert times_sooner(baseline, [(10.0, 45.0), (20.0, 41.0)]) is None  # never reached
    assert times_sooner(baseline, [(90.0, 30.0), (30.0, 40.0)])["ours_seconds"] == 30.0  # in time order


@pytest.mark.slow  # two trainings and four scorings
def test_tiny_run_writes_both_curves_with_the_protocol(tmp_path):
    record_file = tmp_path / "rec.json"
    main(["--preset", "demo", "--seconds", "3", "--snapshots", "2", "--n", "100", "--split", "train",
          "--workers", "0", "--set", "data.limit=256", "--set", "train.epochs=2", "--set", "model.g_channels=8",
          "--set", "model.d_channels=8", "--set", "train.threads=1", "--out", str(tmp_path / "runs"),
          "--record", str(record_file)])
    record = json.loads(record_file.read_text())
    assert len(record["textbook"]) == 2 and len(record["ganforge"]) >= 2
    assert record["textbook"][-1]["seconds"] >= 3.0
    assert all(p["score"] > 0 for p in record["ganforge"] + record["textbook"])
    assert record["protocol"] == {"n_generated": 100, "reference_split": "train", "network": "cls-fid"}
    assert record["machine"]["cpu"] and record["command"].startswith("python -m benchmarks.time_to_quality")
