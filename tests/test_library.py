"""The Python API (`rsitr_bench.run`, `rsitr_bench.evaluate`): same records as the CLI, docstring example tested."""

from __future__ import annotations

import doctest
import json

import pytest
import yaml

import rsitr_bench
from rsitr_bench.harness import library
from rsitr_bench.harness.registry import Registry

pytestmark = pytest.mark.slow  # each test records real runs on the embedded dataset (about 5 s)


def test_docstring_example_runs():
    failures, tried = doctest.testmod(library, verbose=False)
    assert tried >= 3 and failures == 0


def test_run_records_a_trained_run_and_evaluate_an_untrained_one(tmp_path):
    small = {"n_train": 8, "n_val": 4, "n_test": 24}
    config = {"method": "full-ft", "dataset": {"name": "synthetic-rs", **small},
              "train": {"epochs": 1, "batch_size": 8}, "run": {"progress": False}}
    trained = rsitr_bench.run(config, registry=tmp_path / "runs")
    scored = rsitr_bench.evaluate("global-clip", dataset_options=small, progress=False, registry=tmp_path / "runs")
    rows = {r.id: r for r in Registry(tmp_path / "runs").list()}
    assert set(rows) == {trained.run_id, scored.run_id}
    assert rows[trained.run_id].method == "full-ft" and not trained.metrics["evaluation_only"]
    assert trained.metrics["per_seed"]["0"]["fit"]["selection"] != "none (evaluation only)"
    saved = json.loads((trained.run_dir / "metrics.json").read_text())
    assert saved["summary"] == trained.metrics["summary"]
    assert scored.metrics["evaluation_only"] and scored.metrics["fingerprints"]["test"]["images"] == 24


def test_overrides_apply_like_set(tmp_path):
    outcome = rsitr_bench.run({"method": "global-clip", "dataset": {"n_test": 24}}, registry=tmp_path / "runs",
                              overrides={"eval.ks": [1, 5], "run.progress": False})
    assert outcome.metrics["ks"] == [1, 5]


def test_a_method_given_by_name_takes_method_overrides(tmp_path):
    outcome = rsitr_bench.run({"method": "global-clip", "dataset": {"n_test": 24}}, registry=tmp_path / "runs",
                              overrides={"method.batch_size": 8, "run.progress": False})
    saved = yaml.safe_load((outcome.run_dir / "config.yaml").read_text())
    assert saved["method"]["name"] == "global-clip" and saved["method"]["batch_size"] == 8
