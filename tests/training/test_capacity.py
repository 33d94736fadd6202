"""Model sizes known before work starts: meta-device counts equal the real models', the state and
activation estimates against measured figures, and refusals (mocked CUDA, host RAM) in one line."""

from __future__ import annotations

import json
import time
import types

import pytest
import torch
from torch import nn

from conftest import TINY, run_cli
from ganforge.config import apply_override, preset_config
from ganforge.data import DATASETS
from ganforge.errors import ConfigError
from ganforge.models import MODELS, build_models
from ganforge.training import capacity
from ganforge.training.optim import OPTIMIZERS

GIB = 2**30


def _config(preset: str, *overrides: str):
    cfg = preset_config(preset)
    for o in overrides:
        apply_override(cfg, o)
    return cfg


def _shape(cfg):
    spec = DATASETS.get(cfg.data.name)
    num_classes = spec.num_classes if cfg.model.conditional else 0
    return spec.channels, cfg.data.size or spec.native_size, num_classes


PRESETS = [("mnist-dcgan",), ("demo",), ("mnist-upsample",), ("mnist-mlp",), ("mnist-gan",),
           ("cifar10-best",),  # spectrally normalised D
           ("mnist-best", "model.arch=resnet", "model.d_mbstd=4"),
           ("mnist-cgan", "model.arch=resnet")]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: "+".join(p))
def test_meta_parameter_counts_equal_the_real_models(preset):
    cfg = _config(*preset)
    channels, size, classes = _shape(cfg)
    est = capacity.estimate(cfg, channels, size, classes)
    g, d = build_models(cfg.model, channels=channels, size=size, num_classes=classes)
    assert (est.g_params, est.d_params) == (sum(p.numel() for p in g.parameters()),
                                            sum(p.numel() for p in d.parameters()))
    assert est.g_params > 0 and est.d_params > 0


def _real_state_bytes(cfg, channels, size, classes) -> int:
    """Bytes held after one real optimizer step of G and D: weights, buffers, EMA, gradients, moments."""
    import copy

    g, d = build_models(cfg.model, channels=channels, size=size, num_classes=classes)
    total = 0
    for m, lr in ((g, cfg.optim.lr_g), (d, cfg.optim.lr_d)):
        opt = OPTIMIZERS.get(cfg.optim.name)(m.parameters(), lr, cfg.optim, torch.device("cpu"))
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        moments = [v for s in opt.state.values() for k, v in s.items() if k != "step" and torch.is_tensor(v)]
        total += sum(t.nbytes for t in (*m.parameters(), *(p.grad for p in m.parameters()), *moments))
        total += sum(b.nbytes for b in m.buffers() if b.is_floating_point())
    if cfg.model.ema_kimg > 0:
        ema = copy.deepcopy(g)
        total += sum(t.nbytes for t in (*ema.parameters(), *ema.buffers()) if t.is_floating_point())
    return total


@pytest.mark.parametrize("preset", [("demo",), ("mnist-dcgan", "optim.name=sgd"),
                                    ("mnist-mlp", "optim.name=sgd", "optim.momentum=0.9"),
                                    ("cifar10-best",)], ids=lambda p: "+".join(p))
def test_training_state_equals_what_the_optimizers_really_hold(preset):
    cfg = _config(*preset)
    channels, size, classes = _shape(cfg)
    assert capacity.estimate(cfg, channels, size, classes).state_bytes == _real_state_bytes(cfg, channels, size,
                                                                                            classes)


def test_activations_grow_linearly_with_the_batch_and_halve_with_bf16():
    cfg = _config("mnist-dcgan")
    acts = {}
    for b in (16, 32, 64):
        cfg.train.batch_size = b
        acts[b] = capacity.estimate(cfg, 1, 28, 0).activation_bytes
    # Batch-norm statistics are per channel, not per image: linear to well within a percent.
    assert acts[32] == pytest.approx(2 * acts[16], rel=0.01)
    assert acts[64] == pytest.approx(4 * acts[16], rel=0.01)
    assert capacity.estimate(cfg, 1, 28, 0, bf16=True).activation_bytes == pytest.approx(acts[64] / 2, abs=1)


def _measured_saved_peak(trainer, x, labels) -> int:
    """The most bytes autograd holds at once for one real training step: every saved tensor's storage
    (parameters excluded) counted once while any graph still holds it."""
    params = {p.untyped_storage()._cdata for m in (trainer.G, trainer.D) for p in m.parameters()}
    live: dict[int, int] = {}
    state = {"now": 0, "peak": 0}

    class Held:
        def __init__(self, t):
            self.t, s = t, t.untyped_storage()
            self.key, self.n = (None if s._cdata in params else s._cdata), s.nbytes()
            if self.key is not None:
                live[self.key] = live.get(self.key, 0) + 1
                if live[self.key] == 1:
                    state["now"] += self.n
                    state["peak"] = max(state["peak"], state["now"])

        def __del__(self):  # the graph let go of this saved tensor
            if self.key is not None:
                live[self.key] -= 1
                if not live[self.key]:
                    del live[self.key]
                    state["now"] -= self.n

    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        trainer.train_step(x, labels)
    return state["peak"]


@pytest.mark.parametrize("overrides", [[], ["--set", "model.arch=upsample"], ["--set", "model.arch=resnet"],
                                       ["--set", "model.arch=mlp"], ["--set", "loss.name=wgan-gp",
                                                                     "--set", "model.d_norm=layer"]],
                         ids=["dcgan", "upsample", "resnet", "mlp", "wgan-gp"])
def test_activation_estimate_is_within_a_factor_of_two_of_a_measured_step(tmp_path, overrides):
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    argv = TINY + overrides + ["--set", "train.amp=off", "--set", "train.threads=1"]
    for key, value in zip(argv[::2], argv[1::2]):
        apply_override(cfg, value if key == "--set" else f"train.batch_size={value}")
    trainer = Trainer(cfg, run_dir=tmp_path / "r")
    x, labels = next(iter(trainer.batches.epoch(0)))
    measured = _measured_saved_peak(trainer, x, labels)
    est = trainer.estimate.activation_bytes
    print(f"{overrides}: estimate {est / 1e6:.2f} MB, measured {measured / 1e6:.2f} MB, ratio {est / measured:.2f}")
    assert 0.5 * measured <= est <= 2 * measured


def test_the_estimate_builds_nothing_and_draws_no_random_numbers():
    # 3 x 512 x 512 into a fully connected D: 806M parameters, 3 GB and seconds to build for real.
    cfg = _config("mnist-upsample", "data.size=512")
    before = torch.random.get_rng_state()
    start = time.perf_counter()
    est = capacity.estimate(cfg, 3, 512, 0)
    assert time.perf_counter() - start < 2.0
    assert torch.equal(torch.random.get_rng_state(), before)
    assert est.d_params == 3 * 512 * 512 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 256 + 256 + 256 + 1


class _NeedsValues(nn.Module):
    """A layer that reads its own weights while being built, which the meta device cannot do."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.scale = float(self.lin.weight.abs().sum().item())

    def forward(self, x, labels=None):
        return self.lin(x.flatten(1)[:, :4]).squeeze(1) * self.scale


def test_a_model_that_cannot_be_built_on_meta_is_counted_for_real(monkeypatch):
    def build(cfg, *, channels, size, num_classes):
        return nn.Linear(cfg.z_dim, channels * size * size), _NeedsValues()

    monkeypatch.setitem(MODELS._entries, "needs-values", build)
    cfg = _config("mnist-dcgan", "model.arch=needs-values")
    before = torch.random.get_rng_state()
    est = capacity.estimate(cfg, 1, 28, 0)
    assert torch.equal(torch.random.get_rng_state(), before)  # the trainer's weights stay as they were
    assert (est.g_params, est.d_params) == (100 * 784 + 784, 5)
    assert est.activation_bytes is None
    assert "for weights and optimizer state" in est.summary()


def _mock_cuda(monkeypatch, *, total: int, free: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(total_memory=total, major=8, minor=0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=None: (free, total))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_512_pixel_upsample_model_is_refused_on_16_gb_in_one_line(tmp_path, capsys, monkeypatch):
    _mock_cuda(monkeypatch, total=16 * GIB, free=15 * GIB)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code = run_cli(["train", "--preset", "mnist-upsample", "--set", "data.name=mnist-5k", "--set", "data.size=512",
                    "--device", "cuda", "--out", "runs"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ganforge: error: model: G 107.2M + D 269.1M parameters, about ")
    assert ("at batch 128 — more than the 14.4 GiB usable on cuda:0 (16.0 GiB, less 10% for the CUDA context); "
            "lower model.g_channels/model.d_channels, data.size or train.batch_size") in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_normal_preset_fits_a_16_gb_gpu_and_memory_held_elsewhere_is_named(monkeypatch):
    cfg = _config("cifar10-best")
    est = capacity.estimate(cfg, 3, 32, 0, bf16=True)
    _mock_cuda(monkeypatch, total=16 * GIB, free=15 * GIB)
    capacity.check_fits(cfg, est, torch.device("cuda", 0))
    _mock_cuda(monkeypatch, total=16 * GIB, free=est.total_bytes // 2)
    with pytest.raises(ConfigError, match=r"free on cuda:0 \(of its 16.0 GiB; other processes hold the rest\)"):
        capacity.check_fits(cfg, est, torch.device("cuda", 0))


def test_host_ram_is_the_limit_on_cpu_shared_by_local_processes(monkeypatch):
    cfg = _config("mnist-dcgan")
    est = capacity.estimate(cfg, 1, 28, 0)
    monkeypatch.setattr(capacity, "host_available", lambda: 2 * est.total_bytes)
    capacity.check_fits(cfg, est, torch.device("cpu"))
    with pytest.raises(ConfigError, match="of RAM available, shared by 4 processes; lower model.g_channels"):
        capacity.check_fits(cfg, est, torch.device("cpu"), processes=4)
    monkeypatch.setattr(capacity, "host_available", lambda: None)  # nothing known: nothing refused
    capacity.check_fits(cfg, est, torch.device("cpu"), processes=4)


def test_a_start_prints_the_estimate_and_records_it(tmp_path, capsys):
    assert run_cli(["train", "--out", str(tmp_path), "--name", "r", "--max-steps", "1", *TINY]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "r" / "estimate.json").read_text())
    line = next(s for s in out.splitlines() if s.startswith("model: "))
    assert line.endswith("per step at batch 32 (estimate)")
    assert f"G {record['g_params'] / 1e6:.3f}M, D {record['d_params'] / 1e6:.3f}M parameters" in line
    assert record["total_bytes"] == record["state_bytes"] + record["activation_bytes"] > 0
