"""Seed aggregation, bootstrap confidence intervals and the paired test."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from rsitr_bench.metrics import (
    RetrievalResult,
    aggregate_seeds,
    bootstrap_ci,
    paired_test,
    retrieval_metrics,
    significance_tied,
)
from rsitr_bench.metrics.kernel import summarise

RECALL_KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR"]


def _run(quality: float, seed: int, n_images: int = 200, ties: str = "optimistic"):
    """A synthetic run whose scores favour the positive pair by ``quality`` (plus shared base noise)."""
    base = np.random.default_rng(123).standard_normal((n_images, 5 * n_images))
    noise = np.random.default_rng(seed).standard_normal(base.shape)
    owners = np.repeat(np.arange(n_images), 5)
    scores = base + 0.3 * noise
    scores[owners, np.arange(len(owners))] += quality
    return retrieval_metrics(scores, owners, ties=ties)


def test_aggregate_seeds_mean_sample_std_and_n():
    runs = [{"mR": 30.0, "i2t_R@1": 10.0}, {"mR": 31.0, "i2t_R@1": 12.5}, {"mR": 32.5, "i2t_R@1": 11.0}]
    out = aggregate_seeds(runs)
    assert out["mR"] == {"mean": 31.17, "std": round(statistics.stdev([30.0, 31.0, 32.5]), 2), "n": 3}
    assert out["mR"]["std"] == 1.26  # ddof=1 (ddof=0 would give 1.03)
    assert aggregate_seeds(runs[:1])["mR"] == {"mean": 30.0, "std": 0.0, "n": 1}
    res = _run(2.0, 0)
    assert aggregate_seeds([res, res.metrics])["mR"] == {"mean": res.metrics["mR"], "std": 0.0, "n": 2}


def test_aggregate_seeds_rejects_mismatched_or_empty_runs():
    with pytest.raises(
        ValueError, match=r"run 1 reports different metrics from run 0 \(differing keys: \['a'\]\)"
    ):
        aggregate_seeds([{"mR": 1.0, "a": 1.0}, {"mR": 2.0}])
    with pytest.raises(ValueError, match="at least one run"):
        aggregate_seeds([])
    with pytest.raises(ValueError, match=r"run 0: metric 'mR' = 'x' is not a number"):
        aggregate_seeds([{"mR": "x"}])


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    res = _run(2.0, 0)
    ci = bootstrap_ci(res, n_boot=400, seed=1)
    assert sorted(ci) == sorted(RECALL_KEYS)
    for key, (lo, hi) in ci.items():
        assert lo <= res.metrics[key] <= hi, key
        assert hi - lo < 20
    assert bootstrap_ci(res, n_boot=400, seed=1) == ci
    assert bootstrap_ci(res, n_boot=400, seed=2) != ci
    wider = bootstrap_ci(res, n_boot=400, seed=1, level=0.99)
    assert wider["mR"][1] - wider["mR"][0] >= ci["mR"][1] - ci["mR"][0]


def test_bootstrap_ci_is_degenerate_for_a_perfect_run_and_validates_arguments():
    res = _run(100.0, 0, n_images=20)
    assert all(v == [100.0, 100.0] for v in bootstrap_ci(res, n_boot=50).values())
    with pytest.raises(ValueError, match="n_boot = 0"):
        bootstrap_ci(res, n_boot=0)
    with pytest.raises(ValueError, match="level = 1.5"):
        bootstrap_ci(res, level=1.5)


def _bernoulli_result(seed: int, n: int = 300) -> RetrievalResult:
    """A result whose queries are i.i.d. hits with known rates: i2t 30%, t2i 60% (so mR = 45%)."""
    rng = np.random.default_rng(seed)
    hits = {"i2t": (rng.random(n) < 0.3).astype(float), "t2i": (rng.random(n) < 0.6).astype(float)}
    ranks = {d: np.where(h > 0, 1.0, 2.0) for d, h in hits.items()}
    return RetrievalResult(
        metrics=summarise(ranks, {d: {1: h} for d, h in hits.items()}, (1,)),
        i2t_ranks=ranks["i2t"],
        t2i_ranks=ranks["t2i"],
        i2t_hits={1: hits["i2t"]},
        t2i_hits={1: hits["t2i"]},
        protocol="instance",
        ties="optimistic",
        tied_queries={"i2t": 0, "t2i": 0},
        ks=(1,),
        t2i_query_caption=np.arange(n),
    )


def test_bootstrap_ci_covers_the_population_value():
    """Coverage sanity: about 95% of the 95% CIs contain the true rate (binomial: >= 34 of 40 w.p. 0.97)."""
    trials = [bootstrap_ci(_bernoulli_result(seed), n_boot=300, seed=seed) for seed in range(40)]
    assert sum(lo <= 30.0 <= hi for lo, hi in (ci["i2t_R@1"] for ci in trials)) >= 34
    assert sum(lo <= 45.0 <= hi for lo, hi in (ci["mR"] for ci in trials)) >= 34


def test_paired_test_identical_runs_are_tied():
    res = _run(1.5, 0)
    out = paired_test(res, res, n_boot=200)
    assert out == {"metric": "mR", "delta": 0.0, "ci": [0.0, 0.0], "p_value": 1.0, "n_boot": 200}


def test_paired_test_detects_a_clear_gain_and_its_sign():
    strong, weak = _run(2.5, 0), _run(1.5, 1)
    out = paired_test(strong, weak, n_boot=500)
    assert out["delta"] > 0 and abs(out["delta"] - (strong.metrics["mR"] - weak.metrics["mR"])) <= 0.01
    assert out["ci"][0] > 0 and out["p_value"] < 0.01
    back = paired_test(weak, strong, metric="t2i_R@1", n_boot=500)
    assert back["delta"] < 0 and back["ci"][1] < 0 and back["metric"] == "t2i_R@1"


def test_paired_test_noise_level_difference_is_not_significant():
    a, b = _run(1.5, 0), _run(1.5, 1)  # same method, different seeds
    assert paired_test(a, b, n_boot=500)["p_value"] > 0.05
    groups = significance_tied([("a", a), ("b", b), ("strong", _run(3.0, 2))], n_boot=300)
    assert groups == {"a": ["b"], "b": ["a"], "strong": []}


def test_paired_test_rejects_different_splits_and_unknown_metrics():
    a = _run(1.5, 0)
    with pytest.raises(ValueError, match="same test split"):
        paired_test(a, _run(1.5, 0, n_images=100))
    with pytest.raises(ValueError, match="same protocol, tie policy and ks"):
        paired_test(a, _run(1.5, 0, ties="expected"))
    with pytest.raises(ValueError, match=r"unknown metric 'R@1'; expected one of i2t_R@1"):
        paired_test(a, a, metric="R@1")


def test_statistics_work_with_expected_tie_probabilities():
    scores = np.random.default_rng(0).integers(0, 3, size=(50, 250)).astype(float)
    res = retrieval_metrics(scores, np.repeat(np.arange(50), 5), ties="expected")
    assert res.tied_queries["t2i"] > 0
    lo, hi = bootstrap_ci(res, n_boot=200)["mR"]
    assert lo <= res.metrics["mR"] <= hi
