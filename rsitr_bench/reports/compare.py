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

import numpy as np

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


def ties_with_best(best: RunRecord, others: list[RunRecord], alpha: float = 0.05, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, TieVerdict]:
    """Paired test (mR) of every run in ``others`` against ``best``, by run id."""
    reference = per_query_result(best)
    verdicts = {}
    for other in others:
        candidate = per_query_result(other) if reference is not None else None
        if reference is None or candidate is None:
            verdicts[other.id] = TieVerdict(None, None, None, "no per-query hits saved for a paired test")
            continue
        if candidate.n_queries != reference.n_queries:
            verdicts[other.id] = TieVerdict(None, None, None, "different numbers of queries")
            continue
        test = paired_test(reference, candidate, metric="mR", n_boot=n_boot, seed=seed)
        p = float(test["p_value"])
        verdicts[other.id] = TieVerdict(p, float(test["delta"]), p < alpha)
    return verdicts
