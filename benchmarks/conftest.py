"""Benchmark collection, and the metric benchmarks' closing summary (speed ratios, memory, precision).

``tox -e bench`` runs ``pytest benchmarks --benchmark-only``; pytest's default ``python_files`` would skip
``bench_*.py`` when given the directory, so this conftest collects them (files named on the command line
are collected by pytest itself and left alone here).
"""

from __future__ import annotations

import pytest

TIMINGS: dict[tuple[str, str], float] = {}  # (size, kernel) -> median seconds
NOTES: list[str] = []


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def torch_threads():
    """torch's CPU threads for one benchmark: ``RSITR_BENCH_THREADS`` (default 1; on a busy 2-core machine two
    threads are far slower than one), restored afterwards."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("RSITR_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record():
    """``record(size, kernel, benchmark)`` stores the median of a finished benchmark."""

    def _record(size: str, kernel: str, benchmark) -> None:
        TIMINGS[(size, kernel)] = benchmark.stats.stats.median

    return _record


@pytest.fixture
def note():
    """``note(text)`` adds a line to the closing summary."""
    return NOTES.append


def pytest_terminal_summary(terminalreporter):
    sizes = sorted({size for size, _ in TIMINGS})
    if not sizes and not NOTES:
        return
    terminalreporter.section("rsitr_bench.metrics: speed ratios (median times, same run)")
    for size in sizes:
        ours = TIMINGS.get((size, "rsitr_bench"))
        line = f"{size}: rsitr_bench {ours * 1e3:.1f} ms" if ours else f"{size}:"
        for kernel in ("clip_benchmark", "itm_eval_loop"):
            other = TIMINGS.get((size, kernel))
            if other is not None:
                ratio = f" = {other / ours:.1f}x" if ours else ""
                line += f"; {kernel} {other * 1e3:.0f} ms{ratio}"
        terminalreporter.write_line(line)
    for text in NOTES:
        terminalreporter.write_line(text)
