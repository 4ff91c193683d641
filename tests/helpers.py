"""Helpers shared by tests: fake installed distributions, CLI invocation and the test's run registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rsitr_bench.harness.registry import Registry


def make_distribution(site: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> Path:
    """Write a minimal installed distribution (module + dist-info with an rsitr_bench entry point)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[rsitr_bench]\n{entry_name or module} = {module}\n")
    return site


def run_cli(*args: str, extra_path: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m rsitr_bench ARGS`` in a subprocess with the test's isolated directories."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    if extra_path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "rsitr_bench", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def home_registry() -> Registry:
    """The run registry under the test's isolated ``RSITR_BENCH_HOME`` (see tests/conftest.py)."""
    return Registry(Path(os.environ["RSITR_BENCH_HOME"]) / "runs")
