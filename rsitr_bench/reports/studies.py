"""Sweep summaries rebuilt from the registry (no database credentials needed).

Every trial is a registered run tagged with its study, trial number and sampled parameters, so a report can
show a sweep's history and parameter importances from the registry alone, whatever storage the study used.
With a shared registry index (``--registry-index`` / ``RSITR_BENCH_REGISTRY_URL``, e.g. on the study's
PostgreSQL server) every worker's trials are here; registries kept apart are merged with ``runs import``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from rsitr_bench.reports.runs import RunRecord
from rsitr_bench.sweeps.search_space import format_params


@dataclass
class StudySummary:
    """One study as this registry saw it: its trials in order, the best one and parameter importances."""

    name: str
    trials: list[dict[str, Any]]
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    @property
    def best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["value"] is not None]
        return max(done, key=lambda t: t["value"]) if done else None

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["status"]] = out.get(t["status"], 0) + 1
        return out

    @property
    def best_text(self) -> str:
        """``best validation mR 61.25 (trial 1: train.lr=0.0003)`` or empty when no trial completed."""
        best = self.best
        if best is None:
            return ""
        params = format_params(best["params"])
        return f"best validation mR {best['value']:.2f} (trial {best['number']}: {params})"

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.name, "trials": self.trials, "best": self.best, "counts": self.counts,
                "importances": self.importances, "importance_note": self.importance_note}


def summarise_study(name: str, records: Sequence[RunRecord]) -> StudySummary:
    trials = []
    for r in records:
        finished = r.status == "finished" and r.result.get("summary")
        trials.append({"number": int(r.tags["trial"]), "status": r.status, "run_id": r.id,
                       "params": dict(r.tags.get("params") or {}),
                       "value": float(r.result["summary"]["mR"]["mean"]) if finished else None})
    summary = StudySummary(name, trials)
    summary.importances, summary.importance_note = _importances(trials)
    return summary


def _distribution(values: list[Any]) -> optuna.distributions.BaseDistribution | None:
    """A distribution covering the sampled values (None for a parameter that never varied)."""
    distinct = sorted({repr(v) for v in values})
    if len(distinct) < 2:
        return None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return optuna.distributions.CategoricalDistribution(sorted(set(values), key=repr))
    low, high = min(values), max(values)
    if all(isinstance(v, int) for v in values):
        return optuna.distributions.IntDistribution(int(low), int(high))
    log = low > 0 and math.log10(high / low) >= 2  # a range of two decades was almost surely searched in log
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log)


def _importances(trials: list[dict[str, Any]]) -> tuple[dict[str, float], str]:
    done = [t for t in trials if t["value"] is not None and t["params"]]
    if len(done) < 3:
        return {}, f"parameter importances need at least 3 completed trials ({len(done)} so far)"
    keys = sorted({k for t in done for k in t["params"]})
    dists = {k: d for k in keys if (d := _distribution([t["params"].get(k) for t in done])) is not None}
    if not dists:
        return {}, "no searched parameter varied across the completed trials"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the scratch study is not news to the reader
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in done:
        if all(k in t["params"] for k in dists):
            study.add_trial(optuna.trial.create_trial(params={k: t["params"][k] for k in dists},
                                                      distributions=dists, value=t["value"]))
    try:
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, f"parameter importances could not be computed: {exc}"
    return {k: float(v) for k, v in scores.items()}, ""
