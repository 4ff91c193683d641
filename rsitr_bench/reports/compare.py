"""Which methods the data cannot separate from the best: paired tests over the test queries.

A one-point mR lead over a gallery of a few hundred images is often noise (docs/anchors.md §1.6), so a
leaderboard that only bolds the top number overstates what it knows. For every compliant run of a table we
run the paired sign-flip test of :func:`rsitr_bench.metrics.paired_test` against the best run; a run whose
p-value is at least ``alpha`` is marked as *not separable from the best*.

The per-query data are each run's per-seed hit values from ``seeds/<seed>/ranks.npz``, averaged over seeds,
so a query's value is its hit rate across the run's seeds. Runs saved before hit arrays were recorded fall
back to ``rank <= k``, which is exact for the optimistic and pessimistic tie policies; for the ``expected``
policy without saved hits the test is skipped and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rsitr_bench.errors import UserError
from rsitr_bench.metrics import RetrievalResult, paired_test
from rsitr_bench.reports.runs import RunRecord

DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class TieVerdict:
    """The paired test of one run against the best run of its table."""

    p_value: float | None
    delta: float | None
    separable: bool | None  # None: the test could not be run (reason says why)
    reason: str = ""


def per_query_result(record: RunRecord) -> RetrievalResult | None:
    """A seed-averaged :class:`RetrievalResult` of a run's per-query hits, or None if they cannot be had."""
    seeds = record.seed_arrays()
    if not seeds:
        return None
    ks = tuple(int(k) for k in record.result.get("ks") or (1, 5, 10))
    ties = str(record.result.get("ties"))
    hits: dict[str, dict[int, list[np.ndarray]]] = {d: {k: [] for k in ks} for d in DIRECTIONS}
    ranks: dict[str, list[np.ndarray]] = {d: [] for d in DIRECTIONS}
    for arrays in seeds.values():
        for d in DIRECTIONS:
            r = arrays.get(f"{d}_ranks")
            if r is None:
                return None
            ranks[d].append(np.asarray(r, dtype=np.float64))
            for k in ks:
                saved = arrays.get(f"{d}_hits@{k}")
                if saved is None and ties == "expected":
                    return None
                hits[d][k].append(np.asarray(saved, dtype=np.float64) if saved is not None else
                                  (ranks[d][-1] <= k).astype(np.float64))
    if any(len({a.shape for a in ranks[d]}) != 1 for d in DIRECTIONS):
        return None
    mean_hits = {d: {k: np.mean(hits[d][k], axis=0) for k in ks} for d in DIRECTIONS}
    mean_ranks = {d: np.mean(ranks[d], axis=0) for d in DIRECTIONS}
    return RetrievalResult(
        metrics={key: cell["mean"] for key, cell in record.result["summary"].items()},
        i2t_ranks=mean_ranks["i2t"], t2i_ranks=mean_ranks["t2i"],
        i2t_hits=mean_hits["i2t"], t2i_hits=mean_hits["t2i"],
        protocol=str(record.result.get("protocol")), ties=ties, tied_queries={"i2t": 0, "t2i": 0}, ks=ks,
        t2i_query_caption=np.arange(len(mean_ranks["t2i"])),
    )


def missing_hits_reason(*records: RunRecord) -> str:
    """Why a paired test has no per-query hits: a run directory this machine cannot see (the index was shared
    or imported without it), or a run that never saved them."""
    unreachable = [r.id for r in records if not r.dir_reachable]
    if unreachable:
        return (f"paired test skipped: the run directory of {', '.join(unreachable)} (per-query ranks) is not "
                f"reachable from this machine")
    return "no per-query hits saved for a paired test"


def ties_with_best(best: RunRecord, others: list[RunRecord], alpha: float = 0.05, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, TieVerdict]:
    """Paired test (mR) of every run in ``others`` against ``best``, by run id."""
    reference = per_query_result(best)
    verdicts = {}
    for other in others:
        candidate = per_query_result(other) if reference is not None else None
        if reference is None or candidate is None:
            verdicts[other.id] = TieVerdict(None, None, None, missing_hits_reason(best, other))
            continue
        if candidate.n_queries != reference.n_queries:
            verdicts[other.id] = TieVerdict(None, None, None, "different numbers of queries")
            continue
        test = paired_test(reference, candidate, metric="mR", n_boot=n_boot, seed=seed)
        p = float(test["p_value"])
        verdicts[other.id] = TieVerdict(p, float(test["delta"]), p < alpha)
    return verdicts


class IncomparableRunsError(UserError):
    """Two runs whose numbers do not measure the same thing (other test split, protocol, ties or ks)."""


@dataclass(frozen=True)
class MetricDelta:
    """One metric of a two-run comparison: both values, B − A, and the paired test of that difference."""

    metric: str
    a: float
    b: float
    delta: float
    ci: tuple[float, float] | None  # 95% bootstrap CI of B − A over the test queries; None without per-query hits
    p_value: float | None


@dataclass(frozen=True)
class RunComparison:
    """Run B against run A on one test split; ``reason`` says why the paired test is missing, if it is."""

    a: RunRecord
    b: RunRecord
    rows: list[MetricDelta]
    n_boot: int
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        r = self.a.result
        return {
            "a": self.a.id, "b": self.b.id, "fingerprint": self.a.fingerprint.get("sha256"),
            "protocol": r.get("protocol"), "ties": r.get("ties"), "ks": list(r.get("ks") or ()),
            "paired_test": {"n_boot": self.n_boot if not self.reason else None, "skipped": self.reason or None},
            "metrics": {row.metric: {"a": row.a, "b": row.b, "delta": row.delta,
                                     "ci": None if row.ci is None else list(row.ci), "p_value": row.p_value}
                        for row in self.rows},
        }


def compare_runs(a: RunRecord, b: RunRecord, n_boot: int = 1000, seed: int = 0) -> RunComparison:
    """B − A for every R@k of both directions and mR, each with the paired test over the test queries.

    Refuses runs on different test splits (the fingerprints name them) or with another protocol, tie
    policy or ks, whose recalls are different quantities: a difference between them means nothing.
    """
    sha_a, sha_b = a.fingerprint.get("sha256"), b.fingerprint.get("sha256")
    if sha_a != sha_b:
        raise IncomparableRunsError(
            f"Runs {a.id} and {b.id} were scored on different test splits (fingerprint {str(sha_a)[:12]} vs "
            f"{str(sha_b)[:12]}); their numbers are not comparable. `rsitr-bench report` groups runs by split.")
    scoring_a, scoring_b = a.comparability_key[1:], b.comparability_key[1:]
    if scoring_a != scoring_b:
        raise IncomparableRunsError(
            f"Runs {a.id} and {b.id} were scored differently (protocol, ties, ks: {scoring_a} vs "
            f"{scoring_b}); their recalls are different quantities.")
    ks = tuple(int(k) for k in a.result.get("ks") or (1, 5, 10))
    metrics = [f"{d}_R@{k}" for d in DIRECTIONS for k in ks] + ["mR"]
    res_a, res_b = per_query_result(a), per_query_result(b)
    tests: dict[str, dict[str, Any]] = {}
    reason = ""
    if res_a is None or res_b is None:
        reason = missing_hits_reason(a, b)
    elif res_a.n_queries != res_b.n_queries:
        reason = "different numbers of queries"
    else:
        tests = {m: paired_test(res_b, res_a, metric=m, n_boot=n_boot, seed=seed) for m in metrics}
    rows = []
    for metric in metrics:
        value_a, value_b = float(a.result["summary"][metric]["mean"]), float(b.result["summary"][metric]["mean"])
        test = tests.get(metric)
        ci = None if test is None else (float(test["ci"][0]), float(test["ci"][1]))
        p_value = None if test is None else float(test["p_value"])
        rows.append(MetricDelta(metric, value_a, value_b, round(value_b - value_a, 2), ci, p_value))
    return RunComparison(a, b, rows, n_boot, reason)
