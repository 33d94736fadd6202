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

    from ganforge import losses

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
