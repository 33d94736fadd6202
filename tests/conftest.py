"""Shared fixtures and helpers: an isolated cache folder, the real data beside the repository, tiny runs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# CLI flags for a run that takes a second or two: 256 digits, narrow nets, small batches, 8 steps an epoch.
TINY = ["--batch-size", "32", "--set", "data.limit=256", "--set", "model.g_channels=8",
        "--set", "model.d_channels=8", "--set", "train.log_every=2"]
# Added to TINY where two runs must end with bit-identical weights.
EXACT = ["--set", "deterministic=true", "--set", "threads=1"]

# TINY is 256 digits at batch 32: q = 1/8, 8 D steps an epoch; delta must then be below 1/256.
PRIVATE = [*TINY, "--set", "privacy.enabled=true", "--set", "model.d_norm=none", "--set", "privacy.delta=1e-3",
           "--set", "model.conditional=false", "--set", "privacy.sampling_seed=7", "--set", "threads=1"]


def private_trainer(tmp_path, d_condition: str = "projection", **privacy):
    """A conditional private run of 256 digits at batch 32, built in this process (a training.loop.Trainer)."""
    import dataclasses

    from ganforge.config import preset_config
    from ganforge.runtime import Dist
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    cfg.model.d_condition = d_condition
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 256, 32, 8, 8
    cfg.model.d_norm, cfg.train.threads, cfg.model.ema_kimg = "none", 1, 0.0
    cfg.privacy = dataclasses.replace(cfg.privacy, enabled=True, delta=1e-3, sampling_seed=3, **privacy)
    return Trainer(cfg, run_dir=tmp_path / "run", dist=Dist())


def d_grad(t):
    """D's gradient, every parameter's flattened into one vector."""
    import torch

    return torch.cat([p.grad.flatten() for p in t.D.parameters()])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own decoded-array and statistics cache, never the user's."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_args():
    return list(TINY)


def run_cli(argv) -> int:
    """Run `ganforge ARGV` in this process; its exit code."""
    from ganforge.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


def poison_d_loss(monkeypatch, call: int) -> None:
    """Make the bce discriminator loss NaN once, at its `call`-th evaluation (D's weights then turn NaN)."""
    import dataclasses

    from ganforge.training import losses

    bce, calls = losses.LOSSES.get("bce"), {"n": 0}

    def poisoned(real, fake, cfg):
        calls["n"] += 1
        value = bce.d_loss(real, fake, cfg)
        return value * float("nan") if calls["n"] == call else value

    monkeypatch.setitem(losses.LOSSES._entries, "bce", dataclasses.replace(bce, d_loss=poisoned))


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared data folder sits beside the repository)")
    return path


TINY_CGAN = ["--batch-size", "32", "--set", "data.limit=256", "--set", "model.g_channels=8", "--set",
             "model.d_channels=8", "--set", "train.log_every=2", "--set", "model.conditional=true",
             "--set", "model.ema_kimg=0.1", "--set", "train.eval_every=1", "--set", "train.eval_n=100",
             "--set", "train.eval_metrics=cls-fid"]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Two tiny runs made once per session for the commands that use a trained model: `cgan` (conditional,
    EMA, 2 full epochs, classifier FID logged every epoch) and `gan` (unconditional, stopped by --max-steps
    halfway through its first epoch)."""
    import sys

    from ganforge.cli import main

    out = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for argv in (["--name", "cgan", "--epochs", "2", *TINY_CGAN],
                     ["--name", "gan", "--max-steps", "4", "--batch-size", "32", "--set", "data.limit=256",
                      "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--set", "train.log_every=2",
                      "--set", "model.conditional=false"]):
            with pytest.raises(SystemExit) as exit_:
                main(["train", "--out", str(out), *argv])
            assert exit_.value.code == 0, argv
    sys.stdout.flush()
    return {"cgan": out / "cgan", "gan": out / "gan"}


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package) driven by Playwright's Python API; skips, saying how to get it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
                    f"(Playwright's own browser download is not used)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
