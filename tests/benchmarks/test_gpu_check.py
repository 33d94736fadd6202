"""benchmarks.gpu_check: the CPU mode end to end (slow), and that a failing step is named and fails the run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import gpu_check, gpu_check_speed
from benchmarks.gpu_check_runs import compare
from conftest import REPO


@pytest.fixture(scope="module")
def cpu_mode(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
               GANFORGE_CACHE=str(out / "cache"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--json", str(out / "record.json"),
                           "--work", str(out / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    record = json.loads((out / "record.json").read_text())
    return proc, record


@pytest.mark.slow
def test_cpu_mode_exit_code_and_table(cpu_mode):
    proc, record = cpu_mode
    assert list(record["steps"]) == list(gpu_check.STEPS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["failed"] == []
    assert "step" in proc.stdout and "case" in proc.stdout and "result" in proc.stdout
    table = proc.stdout[proc.stdout.index("\nstep "):]
    for name in gpu_check.STEPS:
        assert f"\n{name} " in table
    assert "smoke value" in table and "bit-identical" in table


@pytest.mark.slow
def test_cpu_mode_measures_machine_and_speed(cpu_mode):
    _, record = cpu_mode
    peaks = record["steps"]["machine"]["result"]["peaks"]
    assert peaks["fp32"]["flops"] > 0 and peaks["bf16"]["flops"] > 0
    assert "CUDA" in peaks["fp16"]["skipped"] and "skipped" in peaks["fp32_tf32"]
    speed = record["steps"]["speed"]["result"]["presets"]
    assert set(speed) == {"cifar10-best", "mnist-dcgan64"}
    for preset in speed.values():
        assert preset["flops_per_image"] > 0
        cases = {(c["amp"], c["compile"]): c for c in preset["cases"]}
        assert set(cases) == {(a, c) for a in ("off", "bf16", "fp16") for c in (False, True)}
        for (amp, compiled), case in cases.items():
            if amp == "fp16":  # precision's own refusal is the recorded reason
                assert "only on CUDA" in case["skipped"]
                continue
            assert case["images_per_s"] > 0 and case["share_of_peak"] > 0, case
            assert len(case["windows"]) == 3 and case["native"] in (True, False)
            assert case["peak_used"] == ("fp32" if amp == "off" else amp)
            if compiled:
                assert case["warmup_seconds"] > 0


@pytest.mark.slow
def test_cpu_mode_resume_data_path_and_fid(cpu_mode):
    _, record = cpu_mode
    resume = record["steps"]["resume"]["result"]
    assert resume["identical"] is True and resume["tensors"] > 0
    assert 0 < resume["killed_after_checkpoint"] < resume["steps"]
    data = record["steps"]["data_path"]["result"]
    assert set(data["placements"]) == {"device", "host"}
    assert all(p["images_per_s"] > 0 for p in data["placements"].values())
    assert data["identical"] is True
    fid = record["steps"]["fid"]["result"]
    assert math.isfinite(fid["value"]) and fid["value"] > 0
    assert fid["eval_images_per_s"] > 0 and fid["steps"] > 0 and fid["n_generated"] == 256
    assert "smoke value" in fid["note"]


def test_a_failing_step_is_named_and_fails_the_run(tmp_path, monkeypatch, capsys):
    def broken(ctx):
        raise RuntimeError("the speed step broke")

    monkeypatch.setitem(gpu_check.STEPS, "speed", broken)
    code = gpu_check.main(["--cpu", "--steps", "machine,speed", "--json", str(tmp_path / "r.json"),
                           "--work", str(tmp_path / "work")])
    record = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and record["failed"] == ["speed"]
    assert record["steps"]["speed"]["error"] == "RuntimeError: the speed step broke"
    assert record["steps"]["machine"]["ok"] and record["steps"]["machine"]["result"]["peaks"]["fp32"]["flops"] > 0
    out = capsys.readouterr()
    assert "FAILED: RuntimeError: the speed step broke" in out.out and "FAILED steps: speed" in out.err


def test_a_failing_speed_case_keeps_the_others(tmp_path, monkeypatch):
    """One case that raises fails the step, but the cases that ran stay in the record."""
    def case(ctx, preset, amp, compiled, flops):
        if amp == "bf16" and compiled:
            raise RuntimeError("no kernel")
        return {"preset": preset, "amp": amp, "compile": compiled, "images_per_s": 1.0}

    monkeypatch.setattr(gpu_check_speed, "preset_flops", lambda ctx, preset: 1.0)
    monkeypatch.setattr(gpu_check_speed, "speed_case", case)
    ctx = gpu_check.make_context(gpu_check.parse_args(["--cpu"]), tmp_path)
    entry = gpu_check.run_step("speed", gpu_check_speed.speed, ctx)
    assert not entry["ok"] and "2 case(s) failed" in entry["error"]
    cases = entry["result"]["presets"]["cifar10-best"]["cases"]
    assert len(cases) == 6 and sum("error" in c for c in cases) == 1
    assert entry["result"]["failed_cases"] == ["cifar10-best amp=bf16 compile=True",
                                               "mnist-dcgan64 amp=bf16 compile=True"]


def test_compare_is_bit_for_bit():
    a = {"w": torch.tensor([0.0, 1.0]), "n": torch.tensor(3)}
    assert compare(a, {k: v.clone() for k, v in a.items()})["identical"]
    signed = compare(a, {"w": torch.tensor([-0.0, 1.0]), "n": torch.tensor(3)})  # equal as numbers, not as bits
    assert not signed["identical"] and signed["first_differing"] == "w"
    assert not compare(a, {"w": a["w"]})["identical"]  # a missing tensor differs too


def test_speed_budget_records_the_cases_it_left_out(tmp_path, monkeypatch):
    ran = []

    def case(ctx, preset, amp, compiled, flops):
        ran.append((preset, amp, compiled))
        time.sleep(0.05)
        return {"preset": preset, "amp": amp, "compile": compiled, "images_per_s": 1.0}

    monkeypatch.setattr(gpu_check_speed, "preset_flops", lambda ctx, preset: 1.0)
    monkeypatch.setattr(gpu_check_speed, "speed_case", case)
    ctx = gpu_check.make_context(gpu_check.parse_args(["--cpu", "--speed-budget", "0.01"]), tmp_path)
    result = gpu_check_speed.speed(ctx)
    assert ran == [("cifar10-best", "off", False)]  # eager first, so a short budget loses compiled cases
    cases = [c for p in result["presets"].values() for c in p["cases"]]
    assert len(cases) == 12 and sum("budget of 0 s was spent" in c.get("skipped", "") for c in cases) == 11
