"""The runner's science rules: the sealed test split, validation-only runs, declared results."""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rsitr_bench import hookimpl
from rsitr_bench.api import FitSummary, MethodSpec
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.paths import registry_dir
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.runner import SealedSplitError, execute

SMALL = {"name": "synthetic-rs", "n_train": 6, "n_val": 5, "n_test": 7}
CALLS: list[tuple[str, str]] = []


@dataclass
class TrainOpts:
    epochs: int = 2
    select_on: str = "val"
    as_tensor: bool = False  # score as a torch tensor, as a method scoring on a GPU does


class Spy:
    """A trainable test method that records what the harness hands it."""

    def __init__(self, options, train):
        self.train_options = train

    def fit(self, train, val, ctx):
        CALLS.append(("fit", f"{train.name}+{val.name}"))
        for _ in range(self.train_options.epochs):
            ctx.evaluate(val)
        return FitSummary("val" if self.train_options.select_on == "val" else "test")

    def score(self, split, ctx):
        CALLS.append(("score", split.name))
        rng = np.random.default_rng(ctx.seed)
        scores = rng.standard_normal((split.n_images, split.n_captions))
        return torch.from_numpy(scores) if self.train_options.as_tensor else scores

    def parameter_counts(self):
        return {"total": 1, "trainable": 1}


@hookimpl
def rsitr_register_methods():
    return [MethodSpec(name="spy", factory=Spy, train_options=TrainOpts)]


@pytest.fixture
def host():
    CALLS.clear()
    spy = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    return build_plugin_host(extra_plugins=[("spy", spy)])


def test_test_split_is_scored_once_per_seed_and_never_fitted_on(host):
    config = resolve_config({"method": "spy", "dataset": SMALL, "run": {"seeds": [0, 1], "progress": False}}, host)
    seen = []
    outcome = execute(config, host, Registry(registry_dir()), on_validation=lambda i, m: seen.append(i))
    fits = [c for c in CALLS if c[0] == "fit"]
    assert fits == [("fit", "train+val")] * 2
    assert [c for c in CALLS if c == ("score", "test")] == [("score", "test")] * 2
    assert seen == [0, 1, 0, 1]  # every validation evaluation is reported, per seed
    result = outcome.metrics
    assert result["split"] == "test" and result["selection"] == "val" and result["compliance"]["compliant"]
    assert result["summary"]["mR"]["n"] == 2


def test_a_score_matrix_returned_as_a_tensor_is_recorded_as_its_numpy_twin(host):
    """Methods on a GPU return the matrix where it was computed; the record must not depend on that."""
    recorded = {}
    for as_tensor in (False, True):
        config = resolve_config({"method": "spy", "dataset": SMALL, "train": {"as_tensor": as_tensor},
                                 "run": {"progress": False, "log_samples": True}}, host)
        outcome = execute(config, host, Registry(registry_dir()))
        samples = (outcome.run_dir / "seeds" / "0" / "samples.jsonl").read_text()
        ranks = dict(np.load(outcome.run_dir / "seeds" / "0" / "ranks.npz"))
        recorded[as_tensor] = (outcome.metrics["summary"], samples, ranks)
    (summary, samples, ranks), (t_summary, t_samples, t_ranks) = recorded[False], recorded[True]
    assert t_summary == summary and t_samples == samples
    assert ranks.keys() == t_ranks.keys() and all(np.array_equal(ranks[k], t_ranks[k]) for k in ranks)


def test_evaluate_refuses_the_test_split(monkeypatch):
    from rsitr_bench.harness import runner

    loaded = {}
    original = runner.load_splits
    monkeypatch.setattr(runner, "load_splits", lambda *a, **k: loaded.update(original(*a, **k)) or dict(loaded))
    refused = []

    class Guarded(Spy):
        def fit(self, train, val, ctx):
            with pytest.raises(SealedSplitError, match="sealed"):
                ctx.evaluate(loaded["test"])
            refused.append(True)
            return None

    @hookimpl
    def rsitr_register_methods():
        return [MethodSpec(name="guarded", factory=Guarded, train_options=TrainOpts)]

    guarded = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("g", guarded)])
    execute(resolve_config({"method": "guarded", "dataset": SMALL, "run": {"progress": False}}, host), host,
            Registry(registry_dir()))
    assert refused == [True]


def test_validation_only_run_never_loads_test(host, monkeypatch):
    from rsitr_bench.datasets import synthetic

    loaded = []
    original = synthetic.SyntheticDataset.load_split
    monkeypatch.setattr(synthetic.SyntheticDataset, "load_split",
                        lambda self, name: loaded.append(name) or original(self, name))
    config = resolve_config({"method": "spy", "dataset": SMALL, "run": {"progress": False}}, host)
    outcome = execute(config, host, Registry(registry_dir()), target="val")
    assert "test" not in loaded and outcome.metrics["split"] == "val"
    assert outcome.metrics["split_role"] == "val"
    assert ("score", "val") in CALLS and ("score", "test") not in CALLS


def test_select_on_test_is_stamped_non_compliant(host):
    config = resolve_config({"method": "spy", "dataset": SMALL, "train": {"select_on": "test"},
                             "run": {"progress": False}}, host)
    result = execute(config, host, Registry(registry_dir())).metrics
    assert ("fit", "train+test") in CALLS
    assert result["selection"] == "test (non-compliant)" and not result["compliance"]["compliant"]
