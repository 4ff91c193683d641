"""Shared test fixtures.

Tests never touch the network (HF_HUB_OFFLINE=1) or the user's home: every test gets its own registry and
cache directories.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["tests.fixtures.hf_server"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Point the registry and cache at per-test temporary directories."""
    base = tmp_path_factory.mktemp("rsitr")
    monkeypatch.setenv("RSITR_BENCH_HOME", str(base / "home"))
    monkeypatch.setenv("RSITR_BENCH_CACHE", str(base / "cache"))
    return base


@pytest.fixture
def shared_data() -> Path:
    """The real annotation files beside the repository; tests that need them skip when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real fixture data not found at {SHARED_DATA} (only present in the development checkout)")
    return SHARED_DATA
