"""Uncertainty for retrieval metrics: seed aggregation, per-query bootstrap CIs and a paired test.

Run-to-run noise in RSITR (about 1 to 1.5 mR) is as large as most published gains, so a number without
its spread says little. Every recall is a mean of per-query hit values, which makes resampling queries cheap
and exact: no model is re-run.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rsitr_bench.metrics.kernel import DIRECTIONS, RetrievalResult
from rsitr_bench.metrics.validate import MetricInputError

# Bootstrap replicates drawn per step: bounds the [step, n_queries] index matrix to a few tens of MB.
_REPLICATES_PER_STEP = 64


def aggregate_seeds(
    runs: Sequence[Mapping[str, float] | RetrievalResult],
) -> dict[str, dict[str, float | int]]:
    """Mean, sample standard deviation (ddof=1; 0.0 for a single run) and n of every metric over seeds.

    Accepts ``RetrievalResult`` objects or their ``metrics`` dicts. All runs must report the same keys:
    averaging R@5 of some seeds with R@10 of others would be a silent error. Values are rounded to 2
    decimals, like the metrics themselves.
    """
    tables = [run.metrics if isinstance(run, RetrievalResult) else run for run in runs]
    if not tables:
        raise MetricInputError("aggregate_seeds needs at least one run")
    keys = list(tables[0])
    for index, table in enumerate(tables):
        if set(table) != set(keys):
            diff = sorted(set(table) ^ set(keys))
            raise MetricInputError(
                f"run {index} reports different metrics from run 0 (differing keys: {diff})"
            )
    out: dict[str, dict[str, float | int]] = {}
    for key in keys:
        values = []
        for index, table in enumerate(tables):
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MetricInputError(f"run {index}: metric {key!r} = {value!r} is not a number")
            values.append(float(value))
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = {"mean": round(statistics.fmean(values), 2), "std": round(std, 2), "n": len(values)}
    return out


def _recall_keys(res: RetrievalResult) -> list[tuple[str, int]]:
    return [(d, k) for d in DIRECTIONS for k in res.ks]


def _weights(res: RetrievalResult, metric: str) -> dict[tuple[str, int], float]:
    """Each recall's weight in ``metric``: mR = (mean_k R_i2t + mean_k R_t2i) / 2, R@k itself weight 1."""
    if metric == "mR":
        return {key: 1.0 / (2 * len(res.ks)) for key in _recall_keys(res)}
    for d, k in _recall_keys(res):
        if metric == f"{d}_R@{k}":
            return {(d, k): 1.0}
    known = [f"{d}_R@{k}" for d, k in _recall_keys(res)] + ["mR"]
    raise MetricInputError(f"unknown metric {metric!r}; expected one of {', '.join(known)}")


def _contributions(res: RetrievalResult, weights: Mapping[tuple[str, int], float]) -> dict[str, np.ndarray]:
    """Per-query share of the metric (in percent), so the metric is the sum over all queries."""
    out = {}
    for d in DIRECTIONS:
        n = res.n_queries[d]
        share = np.zeros(n)
        for (direction, k), w in weights.items():
            if direction == d:
                share += w * 100.0 * res.hits(d)[k] / n
        out[d] = share
    return out


def _resampled_sums(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Sum over a with-replacement resample of the rows of ``values`` [n, m], for n_boot replicates."""
    n = values.shape[0]
    sums = np.empty((n_boot, values.shape[1]))
    for start in range(0, n_boot, _REPLICATES_PER_STEP):
        stop = min(start + _REPLICATES_PER_STEP, n_boot)
        picks = rng.integers(0, n, size=(stop - start, n))
        sums[start:stop] = values[picks].sum(axis=1)
    return sums


def _interval(samples: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return [round(float(lo), 2), round(float(hi), 2)]


def _check_resampling(n_boot: int, level: float = 0.95) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise MetricInputError(f"n_boot = {n_boot!r} is not a positive integer")
    if not 0.0 < level < 1.0:
        raise MetricInputError(f"level = {level!r} must be between 0 and 1")


def bootstrap_ci(
    res: RetrievalResult, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap CIs (percent, 2 decimals) for every R@k and for mR.

    Image queries and caption queries are resampled independently (they are different populations); mR of
    a replicate is computed from that replicate's recalls. Deterministic for a given ``seed``.
    """
    _check_resampling(n_boot, level)
    rng = np.random.default_rng(seed)
    recalls: dict[str, np.ndarray] = {}
    for d in DIRECTIONS:
        hits = np.stack([res.hits(d)[k] for k in res.ks], axis=1)
        recalls[d] = 100.0 * _resampled_sums(hits, n_boot, rng) / res.n_queries[d]
    out = {f"{d}_R@{k}": _interval(recalls[d][:, i], level) for d in DIRECTIONS for i, k in enumerate(res.ks)}
    out["mR"] = _interval((recalls["i2t"].mean(axis=1) + recalls["t2i"].mean(axis=1)) / 2, level)
    return out


def paired_test(
    res_a: RetrievalResult, res_b: RetrievalResult, metric: str = "mR", n_boot: int = 1000, seed: int = 0
) -> dict[str, float | str | list[float]]:
    """Is run A better than run B on the same split? Paired over queries.

    * ``delta``: metric(A) - metric(B), percent, 2 decimals.
    * ``ci``: 95% percentile bootstrap CI of delta, resampling queries (the same query for A and B).
    * ``p_value``: two-sided sign-flip permutation test: under "A and B are exchangeable" each query's
      (A, B) pair may be swapped; p = (1 + #{|delta_perm| >= |delta|}) / (1 + n_boot). Use it to mark
      methods as statistically tied (e.g. p >= 0.05).
    """
    _check_resampling(n_boot)
    if (res_a.protocol, res_a.ties, res_a.ks) != (res_b.protocol, res_b.ties, res_b.ks):
        raise MetricInputError(
            "paired_test needs runs with the same protocol, tie policy and ks: "
            f"{(res_a.protocol, res_a.ties, res_a.ks)} vs {(res_b.protocol, res_b.ties, res_b.ks)}"
        )
    if res_a.n_queries != res_b.n_queries or not np.array_equal(
        res_a.t2i_query_caption, res_b.t2i_query_caption
    ):
        raise MetricInputError(
            f"paired_test needs the same test split: queries {res_a.n_queries} vs {res_b.n_queries}"
        )
    weights = _weights(res_a, metric)
    share_a, share_b = _contributions(res_a, weights), _contributions(res_b, weights)
    diffs = {d: share_a[d] - share_b[d] for d in DIRECTIONS}
    delta = float(sum(diffs[d].sum() for d in DIRECTIONS))
    rng = np.random.default_rng(seed)
    boot = sum(_resampled_sums(diffs[d][:, None], n_boot, rng)[:, 0] for d in DIRECTIONS)
    flipped = np.zeros(n_boot)
    for d in DIRECTIONS:
        for start in range(0, n_boot, _REPLICATES_PER_STEP):
            stop = min(start + _REPLICATES_PER_STEP, n_boot)
            signs = rng.integers(0, 2, size=(stop - start, len(diffs[d]))) * 2.0 - 1.0
            flipped[start:stop] += signs @ diffs[d]
    extreme = np.count_nonzero(np.abs(flipped) >= abs(delta) - 1e-9)
    return {
        "metric": metric,
        "delta": round(delta, 2),
        "ci": _interval(boot, 0.95),
        "p_value": round((1 + int(extreme)) / (1 + n_boot), 4),
        "n_boot": n_boot,
    }


def significance_tied(
    results: Iterable[tuple[str, RetrievalResult]],
    metric: str = "mR",
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, list[str]]:
    """For each named run, the runs it is statistically tied with (paired test p >= alpha) on ``metric``."""
    named = list(results)
    tied: dict[str, list[str]] = {name: [] for name, _ in named}
    for i, (name_a, res_a) in enumerate(named):
        for name_b, res_b in named[i + 1 :]:
            if paired_test(res_a, res_b, metric, n_boot, seed)["p_value"] >= alpha:
                tied[name_a].append(name_b)
                tied[name_b].append(name_a)
    return tied
