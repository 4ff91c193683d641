"""Log every finished rsitr-bench run to MLflow (an example ``rsitr_run_finished`` plugin).

Why a plugin and not a flag: trackers come and go (MLflow, W&B, in-house dashboards), and each brings heavy
dependencies. The harness announces a finished run once, after every file is safely written; a tracker only
translates that record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import yaml

from rsitr_bench import hookimpl

EXPERIMENT_ENV = "RSITR_MLFLOW_EXPERIMENT"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"method": {"lr": 1}}`` -> ``{"method.lr": "1"}``: MLflow parameters are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def metric_name(key: str) -> str:
    """MLflow metric names cannot hold ``@``: ``i2t_R@1`` is logged as ``i2t_R_at_1``."""
    return key.replace("@", "_at_")


@hookimpl
def rsitr_run_finished(run: dict[str, Any]) -> None:
    metrics = run["metrics"]
    run_dir = Path(run["dir"])
    mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, "rsitr-bench"))
    with mlflow.start_run(run_name=run["id"]):
        mlflow.set_tags({
            "rsitr.run_id": run["id"], "rsitr.method": run["method"], "rsitr.dataset": run["dataset"],
            "rsitr.split": metrics["split"], "rsitr.protocol": metrics["protocol"], "rsitr.ties": metrics["ties"],
            "rsitr.compliant": str(metrics["compliance"]["compliant"]),
            "rsitr.leakage_audit": metrics["leakage_audit"].get("status", ""),
            "rsitr.evaluation_only": str(metrics.get("evaluation_only", False)),
        })
        config = run_dir / "config.yaml"
        if config.is_file():
            mlflow.log_params(_flatten(yaml.safe_load(config.read_text()) or {}))
        mlflow.log_metrics({metric_name(k): v["mean"] for k, v in metrics["summary"].items()})
        for name in ("metrics.json", "config.yaml"):
            if (run_dir / name).is_file():
                mlflow.log_artifact(str(run_dir / name))
