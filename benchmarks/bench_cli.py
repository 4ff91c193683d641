"""How long ``rsitr-bench --help`` and ``--version`` take, end to end, as a user runs them (pytest-benchmark).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_cli.py --benchmark-only``.
Each round is a fresh process of the installed console script, so the time includes the interpreter's start
and every module that building the parser imports; the target is a median under 0.5 s, which holds only
while no ``add_*_commands`` module imports torch, open_clip or torchvision at import time
(``tests/test_cli_runs.py`` checks that as a behaviour).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsitr_bench import __version__

SCRIPT = Path(sys.executable).with_name("rsitr-bench")
ROUNDS = 10


@pytest.mark.parametrize("flag,expected", [("--help", "usage: rsitr-bench"),
                                           ("--version", f"rsitr-bench {__version__}")])
def test_cli_answers_quickly(benchmark, flag, expected):
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: install the package (pip install -e .)"
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def invoke() -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), flag], capture_output=True, text=True, env=env, timeout=120)

    done = benchmark.pedantic(invoke, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
