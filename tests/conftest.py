"""Shared test fixtures.

Tests never touch the network (HF_HUB_OFFLINE=1) or the user's home: every test gets its own registry and
cache directories. Fixtures shared by several test modules live here or in ``tests/fixtures/`` (registered
below through ``pytest_plugins``); plain helpers live in ``tests/helpers.py`` and ``tests/fixtures/`` and are
imported by name. A test module never imports another test module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["tests.fixtures.hf_server", "tests.fixtures.guidance"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Point the registry and cache at per-test temporary directories."""
    base = tmp_path_factory.mktemp("rsitr")
    monkeypatch.setenv("RSITR_BENCH_HOME", str(base / "home"))
    monkeypatch.setenv("RSITR_BENCH_CACHE", str(base / "cache"))
    monkeypatch.delenv("RSITR_BENCH_REGISTRY_URL", raising=False)  # a user's shared index stays untouched
    return base


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test; modules of tiny-model tests apply it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.

    Tiny models gain nothing from more threads, and on a busy 2-core machine two threads thrash (measured:
    22 ms vs 3 s per training step).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """The real annotation files beside the repository; tests that need them skip when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real fixture data not found at {SHARED_DATA} (only present in the development checkout)")
    return SHARED_DATA
