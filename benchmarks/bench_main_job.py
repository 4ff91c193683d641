"""Wall time of the main job, ``rsitr-bench run --method mps-clip``, beside the zero-shot ``global-clip``.

Both run through the library API (:func:`rsitr_bench.run`, the CLI's path) with their default configuration
(embedded ``synthetic-rs`` and ``rsitr-tiny``, one seed), each in a fresh temporary ``RSITR_BENCH_HOME`` and
``RSITR_BENCH_CACHE``: what a user waits for on first use, corpus generation, guidance and feature caches
included. Measuring them in one process, one after the other, puts both under the same machine load, so their
ratio is comparable across runs even where the absolute times are not.

Run as a script, ``HF_HUB_OFFLINE=1 python benchmarks/bench_main_job.py [--perspectives clip-saliency]``
(``--perspectives`` adds mps-clip rows with other localisers, e.g. the previous default), or under
pytest-benchmark, ``HF_HUB_OFFLINE=1 python -m pytest benchmarks/bench_main_job.py --benchmark-only``, which
stores the times in the benchmark's ``extra_info["wall_s"]``. It takes minutes: the whole main job runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import rsitr_bench

pytestmark = pytest.mark.usefixtures("torch_threads")


@contextmanager
def fresh_home() -> Iterator[Path]:
    """A temporary ``RSITR_BENCH_HOME`` and ``RSITR_BENCH_CACHE``, restored afterwards."""
    names = ("RSITR_BENCH_HOME", "RSITR_BENCH_CACHE")
    before = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-main-job-") as tmp:
        os.environ["RSITR_BENCH_HOME"] = str(Path(tmp) / "home")
        os.environ["RSITR_BENCH_CACHE"] = str(Path(tmp) / "cache")
        try:
            yield Path(tmp)
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def timed_run(method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wall seconds, validation mR of the selected epoch (None without training) and test mR of one default
    run of ``method`` (with ``overrides``) in a fresh home."""
    with fresh_home():
        start = time.perf_counter()
        outcome = rsitr_bench.run({"method": {"name": method}, "run": {"progress": False}}, overrides=overrides)
        wall = time.perf_counter() - start
    (seed,) = outcome.metrics["per_seed"].values()
    val = ((seed.get("fit") or {}).get("train") or {}).get("best_score")
    return {"wall_s": wall, "val_mR": val, "mR": outcome.metrics["summary"]["mR"]["mean"]}


def jobs(perspectives: Sequence[str] = ()) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """label -> (method, overrides): the main job, mps-clip with each other localiser, and global-clip."""
    rows: dict[str, tuple[str, dict[str, Any] | None]] = {"mps-clip (default)": ("mps-clip", None)}
    for name in perspectives:
        rows[f"mps-clip (perspectives={name})"] = ("mps-clip", {"method.perspectives": name})
    rows["global-clip"] = ("global-clip", None)
    return rows


def measure(perspectives: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    return {label: timed_run(method, overrides) for label, (method, overrides) in jobs(perspectives).items()}


def table(rows: dict[str, dict[str, Any]]) -> str:
    base = rows["global-clip"]["wall_s"]
    lines = ["| job | wall time | × global-clip | val mR (selected epoch) | test mR |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {row['wall_s']:.1f} s | {row['wall_s'] / base:.2f} | "
              f"{'-' if row['val_mR'] is None else format(row['val_mR'], '.2f')} | {row['mR']:.2f} |"
              for label, row in rows.items()]
    return "\n".join(lines)


def test_main_job_wall_time(benchmark, note):
    perspectives = [p for p in os.environ.get("RSITR_BENCH_MAIN_JOB_PERSPECTIVES", "").split(",") if p]
    rows = benchmark.pedantic(measure, args=(perspectives,), rounds=1, iterations=1)
    assert all(row["mR"] > 0 for row in rows.values())
    benchmark.extra_info["wall_s"] = {label: row["wall_s"] for label, row in rows.items()}
    benchmark.extra_info["mR"] = {label: {"val": row["val_mR"], "test": row["mR"]} for label, row in rows.items()}
    note(f"main job wall time (torch threads {torch.get_num_threads()}):\n{table(rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perspectives", default="",
                        help="comma-separated localisers to time mps-clip with, besides its default")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RSITR_BENCH_THREADS", "1")),
                        help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = measure([p for p in args.perspectives.split(",") if p])
    print(f"torch threads {args.threads}; 1-minute load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"on {os.cpu_count()} CPUs\n")
    print(table(rows))


if __name__ == "__main__":
    main()
