"""Shared fixtures: an isolated cache folder, the real data beside the repository, tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own decoded-array and statistics cache, never the user's."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_args():
    """CLI flags for a run that takes a second or two: 256 digits, narrow nets, small batches."""
    return ["--batch-size", "32", "--set", "data.limit=256", "--set", "model.g_channels=8",
            "--set", "model.d_channels=8", "--set", "train.log_every=2"]


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared data folder sits beside the repository)")
    return path
