"""Where a run executes: device choice under torchrun, RNG state across GPU counts, strict determinism,
and the gradient all-reduce overlapped with backward (two gloo ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO
from ganforge import runtime
from ganforge.config import preset_config
from ganforge.errors import ConfigError
from ganforge.runtime import Dist
from ganforge.training.loop import Trainer


def _fake_cuda(monkeypatch, count: int) -> dict:
    """A machine with `count` CUDA devices whose generators are plain tensors; records what was set."""
    calls: dict = {"set": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((8,), int(device.index or 0),
                                                                                      dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": calls["set"].append((state, device)))
    # What 0.1.0 called: one state per visible device, restored to as many.
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(8, dtype=torch.uint8)] * count)
    return calls


def test_rng_state_keeps_only_this_rank_s_gpu_and_restores_with_another_gpu_count(monkeypatch):
    _fake_cuda(monkeypatch, 8)
    state = runtime.rng_state(torch.device("cuda", 5))
    assert torch.equal(state["cuda"], torch.full((8,), 5, dtype=torch.uint8))
    calls = _fake_cuda(monkeypatch, 1)  # resumed where one GPU is visible
    runtime.set_rng_state(state, torch.device("cuda", 0))
    assert len(calls["set"]) == 1 and calls["set"][0][1] == torch.device("cuda", 0)


def test_an_old_checkpoint_with_one_state_per_visible_gpu_restores_on_fewer(monkeypatch):
    old = runtime.rng_state()
    old["cuda"] = [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]
    calls = _fake_cuda(monkeypatch, 2)
    runtime.set_rng_state(old, torch.device("cuda", 1))
    (state, device), = calls["set"]
    assert device == torch.device("cuda", 1) and int(state[0]) == 1


def test_a_cpu_resume_of_a_gpu_checkpoint_ignores_the_cuda_state():
    state = runtime.rng_state()
    state["cuda"] = torch.zeros(8, dtype=torch.uint8)
    runtime.set_rng_state(state, torch.device("cpu"))  # no CUDA call at all


def test_cuda_n_under_torchrun_is_refused_and_cuda_takes_the_local_rank(monkeypatch):
    _fake_cuda(monkeypatch, 4)
    with pytest.raises(ConfigError, match=r"train.device=cuda:2 under torchrun: .*LOCAL_RANK.*CUDA_VISIBLE_DEVICES"):
        runtime.pick_device("cuda:2", local_rank=1, world_size=2)
    assert runtime.pick_device("cuda", local_rank=3, world_size=4) == torch.device("cuda", 3)
    assert runtime.pick_device("cuda:2", local_rank=0, world_size=1) == torch.device("cuda", 2)
    with pytest.raises(ConfigError, match="has 4 CUDA device"):
        runtime.pick_device("cuda:7")


def _tiny_cfg(**train):
    cfg = preset_config("demo")
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 64, 16, 8, 8
    cfg.train.device = "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_deterministic_is_strict_not_a_warning(tmp_path):
    try:
        Trainer(_tiny_cfg(deterministic=True), run_dir=tmp_path / "r", dist=Dist()).log.close()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)


def test_an_operation_without_a_deterministic_kernel_stops_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    """On CUDA the bilinear upsampling backward is such an operation. Every CPU kernel has a deterministic
    version, so here D's forward raises PyTorch's own message for that CUDA kernel (c10's
    alertNotDeterministic), as the kernel does on a GPU."""
    from conftest import run_cli
    from ganforge.models import dcgan

    forward = dcgan.DCGANDiscriminator.forward

    def alerting(self, x, labels=None):
        if torch.are_deterministic_algorithms_enabled():
            raise RuntimeError("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, "
                               "but you set 'torch.use_deterministic_algorithms(True)'. You can turn off "
                               "determinism just for this operation, or you can use the 'warn_only=True' option")
        return forward(self, x, labels)

    monkeypatch.setattr(dcgan.DCGANDiscriminator, "forward", alerting)
    try:
        code = run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "2", "--batch-size", "16",
                        "--set", "data.limit=64", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
                        "--set", "deterministic=true"])
    finally:
        torch.use_deterministic_algorithms(False)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert ("train.deterministic=true: upsample_bilinear2d_backward_out_cuda has no deterministic implementation"
            in err)


WORKER = textwrap.dedent('''
    import json, os, sys
    import torch, torch.distributed as dist
    from ganforge.training.gradsync import GradSync
    from ganforge.training.losses import zero_centred_penalty

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same weights on both ranks
    d = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 8, 3, padding=1),
                            torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 1))
    sync = GradSync(d, world_size=2, bucket_mb=float(sys.argv[2]))
    torch.manual_seed(1 + rank)  # each rank its own data
    x = torch.randn(4, 1, 8, 8, requires_grad=True)

    def loss_fn():  # a logit loss plus R1: backward goes through a double backward
        out = d(x).squeeze(1)
        return torch.nn.functional.softplus(-out).mean() + 5.0 * zero_centred_penalty(out, x)

    sync.arm()
    loss_fn().backward()
    sync.finish()
    overlapped = [p.grad.clone() for p in d.parameters()]
    log = list(sync.launch_log)
    d.zero_grad(set_to_none=True)
    loss_fn().backward()  # the reference: one blocking all-reduce per gradient after the whole backward
    for p in d.parameters():
        dist.all_reduce(p.grad)
        p.grad /= 2
    same = all(torch.allclose(a, p.grad, rtol=1e-6, atol=1e-8) for a, p in zip(overlapped, d.parameters()))
    json.dump({"same": same, "log": log, "buckets": len(sync.buckets), "params": len(list(d.parameters()))},
              open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w"))
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_bucketed_all_reduce_starts_during_backward_and_matches_the_blocking_average(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path), "0.0005"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert out["same"], out
        assert out["buckets"] > 1
        # Buckets go out in index order, the first before backward has produced every gradient.
        assert [b for b, _ in out["log"]] == list(range(out["buckets"]))
        assert out["log"][0][1] < out["params"]


def test_a_setting_deterministic_mode_cannot_honour_on_cuda_is_refused_before_any_work():
    cfg = preset_config("demo")
    cfg.model.arch, cfg.model.upsample, cfg.train.deterministic = "upsample", "bilinear", True
    assert "model.upsample=bilinear" in runtime.deterministic_conflict(cfg, torch.device("cuda", 0))
    assert runtime.deterministic_conflict(cfg, torch.device("cpu")) is None  # every CPU kernel is deterministic
    cfg.model.upsample = "nearest"
    assert runtime.deterministic_conflict(cfg, torch.device("cuda", 0)) is None
