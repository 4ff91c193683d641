"""How long ``rsitr-bench runs ls`` and ``rsitr-bench report`` take over a registry of 10,000 runs (pytest-benchmark).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_registry.py --benchmark-only``
(``RSITR_BENCH_REGISTRY_URL=postgresql+psycopg://...`` measures a PostgreSQL index instead of SQLite).
The goal is a median under 2 s each. The rows are synthetic, written straight into the index in one transaction
(recording 10,000 real runs would take hours): 2,000 finished test runs of 20 methods in 100 configurations each
(a leaderboard of 2,000 rows), 8,000 sweep trials of 10 studies, with results of the runner's schema. There are
no run directories, as on a machine that reads a team's shared index: reports read the index alone and skip
the paired tests. Each round is an in-process CLI call, so the time excludes the interpreter's start.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import uuid

import pytest

from rsitr_bench import metrics as M
from rsitr_bench.cli.main import main
from rsitr_bench.harness.registry import RUNS, Registry

N_RUNS, N_TEST, N_METHODS, N_STUDIES = 10_000, 2_000, 20, 10
ROUNDS = 3
DATASET = "synthetic-rs"


def _result(run_id: str, method: str, role: str, quality: float) -> dict:
    values = {f"{d}_R@{k}": round(min(100.0, quality * k), 2) for d in ("i2t", "t2i") for k in (1, 5, 10)}
    values["mR"] = round(sum(values.values()) / len(values), 2)
    fingerprint = {"images": 40, "captions": 200, "normalization": "none", "sha256": "a" * 64,
                   "split": "test" if role == "test" else "val"}
    return {"schema_version": 1, "run_id": run_id, "method": method, "dataset": DATASET, "split": fingerprint["split"],
            "split_role": role, "unit": "percent", "protocol": "instance", "ties": "optimistic", "ks": [1, 5, 10],
            "seeds": [0], "summary": M.aggregate_seeds([values]), "fingerprints": {role: fingerprint},
            "per_seed": {"0": {"seed": 0, "metrics": values}}, "parameters": {"trainable": 1, "total": 2},
            "compliance": {"compliant": True, "reasons": []}, "wall_time_s": 1.0}


def _rows() -> list[dict]:
    rows, now = [], time.time()
    for i in range(N_RUNS):
        test = i < N_TEST
        method = f"method{i % N_METHODS}"
        run_id = f"bench-{i:05d}-{uuid.uuid4().hex[:6]}"
        result = _result(run_id, method, "test" if test else "val", 1 + (i % 97) / 10)
        tags = {} if test else {"study": f"study{i % N_STUDIES}", "trial": i // N_STUDIES}
        config = {"method": {"name": method, "lr": 1e-5 * (1 + (i // N_METHODS) % 100)}, "dataset": {"name": DATASET}}
        rows.append({"id": run_id, "created": now + i, "updated": now + i, "status": "finished", "method": method,
                     "dataset": DATASET, "split": result["split"], "fingerprint": "a" * 64, "seeds": "0",
                     "mr_mean": result["summary"]["mR"]["mean"], "mr_std": 0.0, "compliant": 1, "pid": 1,
                     "host": "bench", "metrics": json.dumps(result), "tags": json.dumps(tags),
                     "config": json.dumps(config)})
    return rows


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("bench-registry") / "runs",
                        index_url=os.environ.get("RSITR_BENCH_REGISTRY_URL"))
    with registry._connect() as db:
        db.execute(RUNS.insert(), _rows())
    return registry


def _cli(registry: Registry, *argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--registry", str(registry.root), *argv]) == 0  # the index: RSITR_BENCH_REGISTRY_URL or SQLite
    return out.getvalue()


def test_runs_ls_over_10000_runs(benchmark, registry):
    out = benchmark.pedantic(_cli, args=(registry, "runs", "ls"), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert out.count("bench-") >= N_RUNS


def test_report_over_10000_runs(benchmark, registry):
    out = benchmark.pedantic(_cli, args=(registry, "report", "--format", "md", "--no-published"), rounds=ROUNDS,
                             iterations=1, warmup_rounds=1)
    assert "method0" in out
