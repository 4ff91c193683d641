"""Sweeps: search-space checks, storages, study binding, pruning, presets and the final test run.

A tiny trainable method (numpy only) stands in for a real one: its validation mR grows with the epoch at a
rate set by ``train.lr``, so a low-lr trial is visibly worse at every epoch and the median pruner stops it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from rsitr_bench.api import FitSummary, MethodSpec
from rsitr_bench.errors import UserError
from rsitr_bench.harness.config import load_yaml_file, resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.hookspecs import hookimpl
from rsitr_bench.sweeps.search_space import build_space
from rsitr_bench.sweeps.study import (
    SweepRequest,
    conclude,
    make_pruner,
    open_storage,
    open_study,
    prepare_sweep,
    redact_url,
    run_sweep,
    run_trials,
)

SMALL = {"dataset": {"n_train": 8, "n_val": 8, "n_test": 8}, "run": {"progress": False}}


@dataclass
class TinyOptions:
    """Options of the test method."""

    noise: float = 1.0


@dataclass
class TinyTrain:
    """Training options of the test method."""

    lr: float = 0.1
    epochs: int = 3
    select_on: str = "val"


class TinyMethod:
    """Similarity = strength x (caption belongs to image) + noise, strength = lr x epochs trained so far."""

    def __init__(self, options: TinyOptions, train: TinyTrain):
        self.options, self.train, self.epoch = options, train, 0

    def fit(self, train, val, ctx):
        for epoch in range(1, self.train.epochs + 1):
            self.epoch = epoch
            ctx.evaluate(val)
        return FitSummary("val")

    def score(self, split, ctx):
        rng = np.random.default_rng(len(split.captions) + ctx.seed)
        owner = np.zeros((split.n_images, split.n_captions))
        owner[split.caption_image, np.arange(split.n_captions)] = 1.0
        return self.train.lr * self.epoch * owner + self.options.noise * rng.normal(size=owner.shape)

    def parameter_counts(self):
        return {"total": 10, "trainable": 10}


TINY_SPACE = {"train.lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}


class TinyPlugin:
    @hookimpl
    def rsitr_register_methods(self):
        return [MethodSpec(name="tiny-trainable", factory=TinyMethod, options=TinyOptions,
                           train_options=TinyTrain, search_space=TINY_SPACE, description="test-only method")]


@pytest.fixture
def host():
    return build_plugin_host(extra_plugins=[("tiny-trainable", TinyPlugin())])


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "runs")


def _request(tmp_path: Path, **kw) -> SweepRequest:
    defaults = dict(method="tiny-trainable", dataset="synthetic-rs", base_tree=SMALL, n_trials=3,
                    storage=f"sqlite:///{tmp_path / 'study.db'}", pruner="median", sampler_seed=0)
    return SweepRequest(**{**defaults, **kw})


# ------------------------------------------------------------------------------------------- search space


@pytest.mark.parametrize("spec", [
    {"type": "float", "low": 1e-3, "high": 1e-3},
    {"type": "float", "low": 1.0, "high": 0.5},
    {"type": "int", "low": 64, "high": 32, "step": 32},
    {"type": "categorical", "choices": []},
])
def test_empty_range_is_rejected_at_start(spec):
    with pytest.raises(UserError, match="empty range"):
        build_space({"train.lr": spec})


def test_user_file_narrows_extends_and_drops_declared_parameters():
    declared = {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
                "method.k": {"type": "categorical", "choices": [1, 2, 4]}}
    space = build_space(declared, {"train.lr": {"high": 1e-4}, "method.k": None,
                                   "method.bottleneck": {"type": "int", "low": 32, "high": 256, "step": 32}})
    assert set(space) == {"train.lr", "method.bottleneck"}
    assert (space["train.lr"].low, space["train.lr"].high, space["train.lr"].log) == (1e-5, 1e-4, True)
    assert space["method.bottleneck"].step == 32
    with pytest.raises(UserError, match="empty range"):
        build_space(declared, {"train.lr": {"low": 1e-3}})  # narrowed to nothing
    with pytest.raises(UserError, match="needs a full spec"):
        build_space(declared, {"train.epochs": {"high": 3}})


def test_bad_keys_and_values_are_reported_before_any_trial(tmp_path, host, registry):
    with pytest.raises(UserError, match="dotted configuration key"):
        build_space({"lr": {"type": "float", "low": 0, "high": 1}})
    space = {"method.nope": {"type": "int", "low": 0, "high": 3}}
    with pytest.raises(UserError, match=r"method.nope=0 gives an invalid configuration.*Unknown key"):
        prepare_sweep(_request(tmp_path, search_space=space), host, registry)
    assert registry.list() == []


def test_an_unknown_pruner_is_named(tmp_path, host, registry):
    with pytest.raises(UserError, match="Unknown pruner 'asha'; choose one of median, hyperband"):
        prepare_sweep(_request(tmp_path, pruner="asha"), host, registry)


def test_a_sweep_never_selects_on_test(tmp_path, host, registry):
    base = {**SMALL, "train": {"select_on": "test"}}
    with pytest.raises(UserError, match="sweeps tune on validation only"):
        prepare_sweep(_request(tmp_path, base_tree=base), host, registry)


def test_method_without_declared_space_needs_a_file(tmp_path, host, registry):
    with pytest.raises(UserError, match="search space is empty"):
        prepare_sweep(_request(tmp_path, method="global-clip"), host, registry)


# ------------------------------------------------------------------------------------------------ storage


def test_redact_url_hides_only_the_password():
    assert redact_url("postgresql://bob:s3cr%40t@db.example:5432/optuna") == \
        "postgresql://bob:***@db.example:5432/optuna"
    assert redact_url("postgresql://bob@db/optuna") == "postgresql://bob@db/optuna"
    assert redact_url("journal:/shared/study.log") == "journal:/shared/study.log"


def test_unreachable_storage_fails_naming_the_url_without_password():
    with pytest.raises(UserError) as info:
        open_storage("postgresql://rsitr:hunter2@127.0.0.1:9/optuna")
    assert "postgresql://rsitr:***@127.0.0.1:9/optuna" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unsupported_storage_is_refused():
    with pytest.raises(UserError, match="Unsupported sweep storage"):
        open_storage("redis://localhost/0")


def test_study_of_another_method_or_dataset_is_refused(tmp_path, host):
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    space = build_space(TINY_SPACE)

    def join(method, dataset):
        return open_study(storage, "shared", method, dataset, make_pruner("none"),
                          optuna.samplers.RandomSampler(), space)

    join("tiny-trainable", "synthetic-rs")
    join("tiny-trainable", "synthetic-rs")  # the same task may join any number of times
    with pytest.raises(UserError, match="created for method 'tiny-trainable' on dataset 'synthetic-rs'"):
        join("global-clip", "synthetic-rs")
    with pytest.raises(UserError, match="not 'tiny-trainable' on 'rsicd'"):
        join("tiny-trainable", "rsicd")


# ------------------------------------------------------------------------------------------------ sweeps


@pytest.mark.slow
def test_sweep_tunes_on_val_prunes_and_exports_a_preset(tmp_path, host, registry):
    request = _request(tmp_path, final_seeds=[0, 1], export=tmp_path / "best.yaml")
    sweep = prepare_sweep(request, host, registry)
    # Two strong trials first, then a weak one that the median pruner must stop at its second epoch.
    for lr in (5.0, 4.0, 0.001):
        sweep.study.enqueue_trial({"train.lr": lr})
    run_trials(sweep)
    outcome = conclude(sweep)

    states = {t.number: t.state for t in outcome.trials}
    assert states == {0: "complete", 1: "complete", 2: "pruned"}
    assert outcome.best.number == 0 and outcome.best.params == {"train.lr": 5.0}
    for trial in outcome.trials:
        row = registry.get(trial.run_id)
        assert row.tag_dict["study"] == "tiny-trainable-synthetic-rs"
        assert row.tag_dict["trial"] == trial.number
        assert row.tag_dict["storage"].startswith("sqlite:///")
        expected = "pruned" if trial.state == "pruned" else "finished"
        assert row.status == expected
        if expected == "finished":
            metrics = json.loads((registry.run_dir(row.id) / "metrics.json").read_text())
            assert metrics["split_role"] == "val" and "test" not in metrics["fingerprints"]

    preset = load_yaml_file(tmp_path / "best.yaml")
    assert preset["train"]["lr"] == 5.0 and preset["method"]["name"] == "tiny-trainable"
    assert "seeds" not in preset.get("run", {})
    resolve_config(preset, host)  # usable with `rsitr-bench run --config`
    assert "validation mR" in (tmp_path / "best.yaml").read_text().splitlines()[0]

    final = registry.get(outcome.final_run_id)
    assert final.tag_dict["final"] is True and final.seeds == "0,1"
    metrics = json.loads((registry.run_dir(final.id) / "metrics.json").read_text())
    assert metrics["split_role"] == "test" and metrics["seeds"] == [0, 1]


@pytest.mark.parametrize("pruner", ["hyperband", "wilcoxon", "none"])
@pytest.mark.slow
def test_every_pruner_runs_a_sweep(tmp_path, host, registry, pruner):
    outcome = run_sweep(_request(tmp_path, pruner=pruner, n_trials=2), host, registry)
    assert len(outcome.trials) == 2 and outcome.best is not None and outcome.preset.is_file()


@pytest.mark.slow
def test_a_second_worker_joins_the_study_and_numbers_continue(tmp_path, host, registry):
    run_sweep(_request(tmp_path, n_trials=1), host, registry)
    outcome = run_sweep(_request(tmp_path, n_trials=2), host, registry)
    assert [t.number for t in outcome.trials] == [0, 1, 2]
    assert len({t.run_id for t in outcome.trials}) == 3


@pytest.mark.slow
def test_a_failing_trial_does_not_stop_the_sweep_and_is_retried_once(tmp_path, registry):
    class Exploding(TinyMethod):
        def fit(self, train, val, ctx):
            if self.train.lr > 1.0:
                raise FloatingPointError("loss diverged")
            return super().fit(train, val, ctx)

    class Plugin:
        @hookimpl
        def rsitr_register_methods(self):
            return [MethodSpec(name="tiny-trainable", factory=Exploding, options=TinyOptions,
                               train_options=TinyTrain, search_space=TINY_SPACE)]

    host = build_plugin_host(extra_plugins=[("tiny", Plugin())])
    sweep = prepare_sweep(_request(tmp_path, n_trials=3), host, registry)
    sweep.study.enqueue_trial({"train.lr": 5.0})
    sweep.study.enqueue_trial({"train.lr": 0.5})
    run_trials(sweep)
    trials = sweep.study.get_trials()
    assert [t.state.name for t in trials[:3]] == ["FAIL", "COMPLETE", "FAIL"]
    assert trials[2].params == {"train.lr": 5.0}  # the retry of trial 0, same parameters
    assert registry.get(trials[0].user_attrs["run_id"]).status == "failed"


def test_cli_sweep_flags_and_worker_command_line(tmp_path):
    import argparse

    from rsitr_bench.cli.main import _common
    from rsitr_bench.cli.sweep_report import add_sweep_report_commands, run_sweep_command, worker_argv

    common = _common()
    parser = argparse.ArgumentParser(parents=[_common(top=True)])
    add_sweep_report_commands(parser.add_subparsers(dest="command"), [common])
    args = parser.parse_args(["sweep", "--method", "mps-clip", "--n-trials", "4", "--gpus", "0,1",
                              "--pruner", "wilcoxon",
                              "--storage", "journal:/tmp/s.log", "--set", "train.epochs=2",
                              "--final-seeds", "0,1,2", "--sampler-seed", "3"])
    argv = worker_argv(args)
    assert argv[:5] == ["sweep", "--method", "mps-clip", "--n-trials", "4"]
    assert "--set" in argv and "train.epochs=2" in argv and "journal:/tmp/s.log" in argv
    assert "--final-seeds" not in argv and "--gpus" not in argv and "--sampler-seed" not in argv
    worker = parser.parse_args(argv + ["--registry", str(tmp_path)])
    for name in ("method", "n_trials", "storage", "overrides", "pruner", "trial_seed", "max_retry"):
        assert getattr(worker, name) == getattr(args, name), name
    args.storage = None
    with pytest.raises(UserError, match="--gpus starts several workers"):
        run_sweep_command(args, build_plugin_host(), Registry(tmp_path / "runs"))


def test_preset_file_is_plain_yaml(tmp_path, host, registry):
    outcome = run_sweep(_request(tmp_path, n_trials=1, pruner="none"), host, registry)
    data = yaml.safe_load(outcome.preset.read_text())
    assert data["dataset"] == {"name": "synthetic-rs", "n_train": 8, "n_val": 8, "n_test": 8}


def test_ctrl_c_in_a_trial_is_quiet_and_says_how_to_continue_the_study(tmp_path, registry):
    import logging

    class Interrupted(TinyMethod):
        def fit(self, train, val, ctx):
            raise KeyboardInterrupt

    class Plugin:
        @hookimpl
        def rsitr_register_methods(self):
            return [MethodSpec(name="tiny-trainable", factory=Interrupted, options=TinyOptions,
                               train_options=TinyTrain, search_space=TINY_SPACE)]

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep()
    optuna_log = logging.getLogger("optuna.study._optimize")
    optuna_log.addHandler(keep)
    try:
        sweep = prepare_sweep(_request(tmp_path, n_trials=2), build_plugin_host(extra_plugins=[("tiny", Plugin())]),
                              registry)
        with pytest.raises(KeyboardInterrupt):
            run_trials(sweep)
    finally:
        optuna_log.removeHandler(keep)
    assert not any(r.exc_info for r in records), "Optuna's traceback of the Ctrl-C must not be shown"
    assert not any("failed with value" in r.getMessage() for r in records)
    (row,) = registry.list()
    assert row.effective_status == "interrupted"
    log = (registry.run_dir(row.id) / "run.log").read_text()
    assert f"--study {sweep.name}" in log and "continues the study" in log and "run --resume" not in log


def test_cli_sweep_interrupted_prints_the_command_that_continues_it(tmp_path, monkeypatch, capsys):
    from rsitr_bench.cli.main import main
    from rsitr_bench.sweeps import study

    def interrupted(sweep):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_trials", interrupted)
    code = main(["sweep", "--method", "full-ft", "--n-trials", "1", "--study", "s1", "--no-progress",
                 "--registry", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert "rsitr-bench sweep --method full-ft --dataset synthetic-rs --study s1" in err and "continues it" in err
