"""The example MLflow tracker plugin logs a finished run to a local MLflow file store, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each run builds a plugin host and writes an MLflow store (about 5 s)

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in the test extra; install it to run this test")

from rsitr_bench.harness.config import resolve_config  # noqa: E402
from rsitr_bench.harness.plugins import build_plugin_host  # noqa: E402
from rsitr_bench.harness.registry import Registry  # noqa: E402
from rsitr_bench.harness.runner import execute  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rsitr-bench-mlflow"


@pytest.fixture
def tracker(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    monkeypatch.setenv("RSITR_MLFLOW_EXPERIMENT", "rsitr-test")
    import rsitr_mlflow

    yield rsitr_mlflow
    sys.modules.pop("rsitr_mlflow", None)


def test_finished_run_is_logged_with_stamps_params_metrics_and_artifacts(tracker, tmp_path):
    host = build_plugin_host(extra_plugins=[("mlflow", tracker)])
    tree = {"method": {"name": "global-clip"}, "dataset": {"name": "synthetic-rs", "n_test": 24},
            "run": {"progress": False}}
    outcome = execute(resolve_config(tree, host), host, Registry(tmp_path / "runs"), fit=False)

    runs = mlflow.search_runs(experiment_names=["rsitr-test"], output_format="list")
    (logged,) = runs
    assert logged.info.run_name == outcome.run_id
    assert logged.data.tags["rsitr.method"] == "global-clip" and logged.data.tags["rsitr.compliant"] == "True"
    assert logged.data.tags["rsitr.evaluation_only"] == "True"
    assert logged.data.params["method.name"] == "global-clip" and logged.data.params["dataset.n_test"] == "24"
    summary = outcome.metrics["summary"]
    assert logged.data.metrics["mR"] == pytest.approx(summary["mR"]["mean"])
    assert logged.data.metrics["i2t_R_at_1"] == pytest.approx(summary["i2t_R@1"]["mean"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(logged.info.run_id)}
    assert artifacts == {"metrics.json", "config.yaml"}


def test_a_tracker_failure_does_not_fail_the_run(tracker, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unsupported-scheme://nowhere")
    host = build_plugin_host(extra_plugins=[("mlflow", tracker)])
    tree = {"method": {"name": "global-clip"}, "dataset": {"name": "synthetic-rs", "n_test": 24},
            "run": {"progress": False}}
    outcome = execute(resolve_config(tree, host), host, Registry(tmp_path / "runs"), fit=False)
    assert outcome.metrics["summary"]["mR"]["mean"] > 0
    assert "run-finished hook failed" in (outcome.run_dir / "run.log").read_text()
