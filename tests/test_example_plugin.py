"""The example out-of-tree plugin installs as its own distribution and runs through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rsitr-bench-toy-method"


@pytest.mark.slow
def test_example_plugin_installs_lists_and_runs(tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    plugins = run_cli("list", "plugins", extra_path=target)
    assert plugins.returncode == 0, plugins.stderr
    line = next(line for line in plugins.stdout.splitlines() if line.startswith("toy "))
    assert "rsitr-bench-toy-method" in line and "0.1.0" in line

    run = run_cli("run", "--method", "toy-random", "--no-progress", "--set", "method.scale=2",
                  "--set", "dataset.n_train=4", "--set", "dataset.n_val=4", "--set", "dataset.n_test=20",
                  extra_path=target)
    assert run.returncode == 0, run.stderr
    assert "toy-random on synthetic-rs/test" in run.stdout and "recorded as run" in run.stdout
