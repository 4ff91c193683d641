"""Where rsitr-bench keeps its files.

``RSITR_BENCH_HOME`` (default ``~/.rsitr-bench``) holds the run registry (``RSITR_BENCH_REGISTRY_URL`` moves its
index into a shared database); ``RSITR_BENCH_CACHE`` (default
``~/.cache/rsitr-bench``) holds content-addressed artefacts that can always be recomputed: generated
datasets, features, keywords and perspectives.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    return Path(os.environ.get("RSITR_BENCH_HOME", Path.home() / ".rsitr-bench")).expanduser()


def registry_dir() -> Path:
    return home_dir() / "runs"


def registry_index_url() -> str | None:
    """``RSITR_BENCH_REGISTRY_URL``: a database URL (``postgresql://...``) for the registry's index, shared by
    every machine that records runs; unset, the index is ``index.sqlite`` in the registry directory."""
    return os.environ.get("RSITR_BENCH_REGISTRY_URL") or None


def cache_dir() -> Path:
    return Path(os.environ.get("RSITR_BENCH_CACHE", Path.home() / ".cache" / "rsitr-bench")).expanduser()
