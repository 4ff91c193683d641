"""Optuna sweeps that tune on validation only, on one laptop or many machines sharing one study.

Why it looks like this:

* **The objective is validation mR, never test.** Each trial is a normal registered run executed with
  ``target="val"``: the method fits on train (selecting on val), then the *validation* split is scored and
  recorded; the test split is not even loaded. Sweeps on the test split are how the field ended up with
  optimistic tables (docs/anchors.md §1.3).
* **A trial is a run.** It lands in the registry like any other run, tagged ``{"study", "trial", "storage",
  "params"}``, so ``rsitr-bench runs ls`` shows it, and reports draw the optimisation history from the
  registry without needing database credentials. A pruned trial's run is recorded with status ``pruned``.
* **Storage decides the scale.** The default SQLite file under the registry serves one process. An RDB URL
  (PostgreSQL) or a journal file (``journal:PATH``, safe on NFS) lets any number of workers (one process per
  GPU, through ``CUDA_VISIBLE_DEVICES``, on any number of machines) share one study. RDB storages get
  Optuna's heartbeat: a trial whose worker died is marked failed by the next worker and re-queued with the
  same parameters; a trial that raised is failed and re-queued the same way, and the sweep goes on.
* **Fail at start, not at trial 7.** The search space, the configuration at the corners of every range and the
  storage are all checked before the first trial; a study created for another method or dataset is refused.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
import yaml

from rsitr_bench.errors import UserError
from rsitr_bench.harness import runner
from rsitr_bench.harness.atomic import write_text_atomic
from rsitr_bench.harness.config import RunConfig, apply_override, resolve_config
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry
from rsitr_bench.sweeps.search_space import ParamSpec, build_space

PRUNERS = ("median", "hyperband", "wilcoxon", "none")
JOURNAL_PREFIX = "journal:"
DEFAULT_STORAGE_FILE = "optuna.sqlite3"
# Study user attributes that bind a study to what it tunes.
ATTR_METHOD, ATTR_DATASET, ATTR_SPACE = "rsitr.method", "rsitr.dataset", "rsitr.search_space"
# Trial user attributes of a re-queued failed trial.
ATTR_RETRY_OF, ATTR_RETRIES = "rsitr.retry_of", "rsitr.retries"


@dataclass
class SweepRequest:
    """Everything one sweep worker needs; the CLI fills it from flags.

    Attributes:
        base_tree: the configuration mapping every trial starts from (``--config`` plus ``--set``), without
            the searched keys.
        n_trials: trials *this worker* runs; with several workers the study gets the sum. 0 runs none: the
            study's best trial (found by other workers) is only exported and, with ``final_seeds``, tested.
        storage: None (SQLite file under the registry), an RDB URL, or ``journal:PATH``.
        trial_seed: every trial runs this one seed (a trial is a point estimate; ``final_seeds`` measure
            the spread of the chosen configuration).
        final_seeds: after the search, run the best configuration on test once with these seeds.
        export: where the best configuration is written as a run preset (default under the registry).
    """

    method: str
    dataset: str
    base_tree: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 20
    study_name: str | None = None
    storage: str | None = None
    pruner: str = "median"
    search_space: Mapping[str, Any] | None = None
    trial_seed: int = 0
    sampler_seed: int | None = None
    timeout: float | None = None
    final_seeds: list[int] | None = None
    export: Path | None = None
    heartbeat_s: int = 60
    max_retry: int = 1


@dataclass
class TrialRecord:
    """One trial of the study, as reported at the end of a sweep."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None


@dataclass
class SweepOutcome:
    study_name: str
    storage: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    preset: Path | None
    final_run_id: str | None = None
    final_metrics: dict[str, Any] | None = None


class TrialError(Exception):
    """A trial raised something other than a user error (e.g. diverged training): the trial fails, the sweep
    goes on, and the failed trial is re-queued once with the same parameters."""


# ------------------------------------------------------------------------------------------------ storage


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``: what messages, tags and logs may show."""
    if url.startswith(JOURNAL_PREFIX) or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def default_storage(registry: Registry) -> str:
    return f"sqlite:///{(registry.root / DEFAULT_STORAGE_FILE).resolve()}"


def _scrub(text: str, url: str) -> str:
    password = urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


def open_storage(url: str, heartbeat_s: int = 60, max_retry: int = 1) -> optuna.storages.BaseStorage:
    """Open (and check) a study storage: ``journal:PATH`` or an RDB URL (sqlite, postgresql, mysql).

    RDB storages are connected right away with a short connect timeout, so an unreachable server fails here,
    in seconds, naming the URL without its password.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    shown = redact_url(url)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        if not path.name:
            raise UserError(f"Storage {url!r} names no file; use journal:/shared/dir/study.log.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise UserError(f"Cannot open the journal storage {shown}: {exc.strerror or exc}.") from None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    dialect = scheme.split("+", 1)[0]
    if dialect not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"Unsupported sweep storage {shown!r}. Use an RDB URL (postgresql://user:pw@host/db, "
                        f"mysql://..., sqlite:///path.db) or journal:PATH.")
    engine_kwargs: dict[str, Any] = {}
    if dialect == "sqlite":
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                  grace_period=2 * heartbeat_s, **_stale_retry(max_retry))
        except (IntegrityError, ProgrammingError):
            # Workers that start together race to create Optuna's tables; the loser sees the winner's
            # half-made schema. Waiting a moment and connecting again finds the finished tables.
            if attempt >= 3:
                raise
            time.sleep(attempt)
        except ModuleNotFoundError as exc:
            hint = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
                    "MySQLdb": "mysqlclient"}.get(str(exc.name), exc.name)
            raise UserError(f"Storage {shown} needs the Python driver {exc.name!r}; install it with "
                            f"`pip install {hint}`.") from None
        except Exception as exc:  # SQLAlchemy wraps every driver error differently; all mean "cannot use it"
            reason = _scrub(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0], url)
            raise UserError(f"Cannot reach the sweep storage {shown}: {reason}. Check that the server is up "
                            f"and reachable from this machine, and the user name, password and "
                            f"database.") from None


def _stale_retry(max_retry: int) -> dict[str, Any]:
    """The RDBStorage argument that re-queues a stale trial (Optuna renamed it in 4.9)."""
    parameters = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    if "heartbeat_stale_trial_callback" in parameters:
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry)}


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner a user names. Steps are validation rounds (epochs), numbered from 1.

    ``wilcoxon`` is adapted to training sweeps: Optuna's WilcoxonPruner compares a trial's step values with
    the best trial's at the same steps with a signed-rank test. Here a step is an epoch, so the test pairs
    the two learning curves epoch by epoch (see docs/sweeps.md for why not per query).
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"Unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}.")


def open_study(storage: optuna.storages.BaseStorage, name: str, method: str, dataset: str,
               pruner: optuna.pruners.BasePruner, sampler: optuna.samplers.BaseSampler,
               space: Mapping[str, ParamSpec]) -> optuna.Study:
    """Create the study or join it; refuse one that tunes another method or dataset or minimises."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner,
                                sampler=sampler, load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"Study {name!r} minimises its objective; rsitr-bench studies maximise validation "
                        f"mR. Use another --study name.")
    wanted = {ATTR_METHOD: method, ATTR_DATASET: dataset}
    attrs = study.user_attrs
    for key, value in wanted.items():
        if key in attrs and attrs[key] != value:
            raise UserError(f"Study {name!r} was created for method {attrs.get(ATTR_METHOD)!r} on dataset "
                            f"{attrs.get(ATTR_DATASET)!r}, not {method!r} on {dataset!r}. Trials of "
                            f"different tasks cannot share a study: pick another --study name.")
    for key, value in wanted.items():
        if key not in attrs:
            study.set_user_attr(key, value)
    if ATTR_SPACE not in attrs:
        study.set_user_attr(ATTR_SPACE, {k: p.to_dict() for k, p in space.items()})
    return study


# ------------------------------------------------------------------------------------------------- trials


def trial_tree(base: Mapping[str, Any], params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The configuration of one trial: the base tree with every sampled value applied (and its seed)."""
    tree = copy.deepcopy(dict(base))
    for section in ("method", "dataset"):
        if isinstance(tree.get(section), str):
            tree[section] = {"name": tree[section]}
    for key, value in params.items():
        apply_override(tree, key.split("."), value)
    if seed is not None:
        apply_override(tree, ["run", "seeds"], [seed])
    return tree


def trial_config(tree: Mapping[str, Any], host: PluginHost) -> RunConfig:
    """Resolve a trial's configuration, refusing legacy test-split selection: a sweep tunes on validation."""
    config = resolve_config(dict(tree), host)
    if getattr(config.train, "select_on", "val") == "test":
        raise UserError("train.select_on=test selects models on the test split; sweeps tune on validation "
                        "only. Remove it from the base configuration and the search space.")
    return config


def check_space_resolves(base: Mapping[str, Any], space: Mapping[str, ParamSpec], host: PluginHost) -> None:
    """Resolve the configuration at both ends of every range (and at every choice) before any trial runs, so
    a searched key the method does not have, or a value its options reject, stops the sweep at start."""
    for spec in space.values():
        for value in spec.corners():
            try:
                trial_config(trial_tree(base, {spec.key: value}), host)
            except UserError as exc:
                raise UserError(f"Search-space parameter {spec.key}={value!r} gives an invalid "
                                f"configuration: {exc}") from None


class PrunedRun(runner.RunStopped, optuna.TrialPruned):
    """Stops the trial's run (recorded as ``pruned`` by the runner) and tells Optuna the trial was pruned."""

    status = "pruned"


class ValidationReporter:
    """``on_validation`` callback: reports each validation mR to Optuna and prunes when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def __call__(self, index: int, metrics: Mapping[str, float]) -> None:
        step = index + 1  # epochs from 1: Hyperband reads steps as resource units
        self.trial.report(float(metrics["mR"]), step)
        if self.trial.should_prune():
            raise PrunedRun(f"pruned at validation {step} (val mR {metrics['mR']:.2f})")


def find_trial_run(registry: Registry, method: str, dataset: str, study: str, number: int) -> str | None:
    """The registry run of one trial, found through its tags (the newest, should a trial be retried)."""
    for row in reversed(registry.list(method, dataset)):
        tags = row.tag_dict
        if tags.get("study") == study and tags.get("trial") == number:
            return row.id
    return None


# ------------------------------------------------------------------------------------------------- sweep


@dataclass
class Sweep:
    """A checked request joined to its study: what :func:`run_trials` and :func:`conclude` work on."""

    request: SweepRequest
    host: PluginHost
    registry: Registry
    space: dict[str, ParamSpec]
    base: dict[str, Any]
    name: str
    storage: str  # the URL as it may be shown: password redacted
    study: optuna.Study


def prepare_sweep(request: SweepRequest, host: PluginHost, registry: Registry) -> Sweep:
    """Check everything that can be checked before a trial runs, then create or join the study."""
    if request.n_trials < 0:
        raise UserError(f"--n-trials must be 0 (only export the best trial) or more, got {request.n_trials}.")
    pruner = make_pruner(request.pruner)
    method_spec = host.get("methods", request.method).spec
    host.get("datasets", request.dataset)
    space = build_space(getattr(method_spec, "search_space", {}) or {}, request.search_space, request.method)
    base = trial_tree(request.base_tree, {"method.name": request.method, "dataset.name": request.dataset})
    check_space_resolves(base, space, host)
    trial_config(trial_tree(base, {}, request.trial_seed), host)
    url = request.storage or default_storage(registry)
    storage = open_storage(url, request.heartbeat_s, request.max_retry)
    name = request.study_name or f"{request.method}-{request.dataset}"
    sampler = optuna.samplers.TPESampler(seed=request.sampler_seed)
    study = open_study(storage, name, request.method, request.dataset, pruner, sampler, space)
    return Sweep(request, host, registry, space, base, name, redact_url(url), study)


def run_trials(sweep: Sweep) -> None:
    """Run this worker's ``n_trials`` trials; each is a validation-only registered run."""
    request, registry = sweep.request, sweep.registry
    if request.n_trials == 0:
        return

    def objective(trial: optuna.Trial) -> float:
        params = {key: spec.suggest(trial) for key, spec in sweep.space.items()}
        config = trial_config(trial_tree(sweep.base, params, request.trial_seed), sweep.host)
        tags = {"study": sweep.name, "trial": trial.number, "storage": sweep.storage, "params": params}
        try:
            outcome = runner.execute(config, sweep.host, registry, tags=tags,
                                     on_validation=ValidationReporter(trial), target="val",
                                     continue_hint=f"`{continue_command(sweep)}` continues the study")
        except optuna.TrialPruned:
            run_id = find_trial_run(registry, request.method, request.dataset, sweep.name, trial.number)
            if run_id:
                trial.set_user_attr("run_id", run_id)
            raise
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:
            run_id = find_trial_run(registry, request.method, request.dataset, sweep.name, trial.number)
            if run_id:
                trial.set_user_attr("run_id", run_id)
            raise TrialError(f"trial {trial.number} failed: {type(exc).__name__}: {exc}") from exc
        trial.set_user_attr("run_id", outcome.run_id)
        value = float(outcome.metrics["summary"]["mR"]["mean"])
        if not math.isfinite(value):
            raise TrialError(f"trial {trial.number} gave a non-finite validation mR")
        return value

    def retry_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        retries = int(trial.user_attrs.get(ATTR_RETRIES, 0))
        if trial.state == optuna.trial.TrialState.FAIL and retries < request.max_retry:
            study.enqueue_trial(trial.params, user_attrs={
                ATTR_RETRY_OF: trial.user_attrs.get(ATTR_RETRY_OF, trial.number), ATTR_RETRIES: retries + 1})

    quiet = QuietInterrupt()
    optuna_log = logging.getLogger("optuna.study._optimize")
    optuna_log.addFilter(quiet)
    try:
        sweep.study.optimize(objective, n_trials=request.n_trials, timeout=request.timeout, catch=(TrialError,),
                             callbacks=[retry_failed])
    finally:
        optuna_log.removeFilter(quiet)


def continue_command(sweep: Sweep) -> str:
    """The command that continues this study after an interruption (finished trials are kept in it)."""
    request = sweep.request
    command = f"rsitr-bench sweep --method {request.method} --dataset {request.dataset} --study {sweep.name}"
    return command + (f" --storage {sweep.storage}" if request.storage else "")  # password redacted


class QuietInterrupt(logging.Filter):
    """Drops Optuna's report of a trial stopped by Ctrl-C: a failure message with the whole traceback, then
    "failed with value None". The user pressed Ctrl-C; the command says what was kept and how to continue."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        trial = message.split(" failed", 1)[0]
        if isinstance(error, KeyboardInterrupt):
            self.interrupted.add(trial)
            return False
        return not (trial in self.interrupted and " failed with value " in message)


def conclude(sweep: Sweep) -> SweepOutcome:
    """Export the study's best configuration as a run preset and, if asked, evaluate it once on test."""
    request = sweep.request
    trials = [_record(t) for t in sweep.study.get_trials(deepcopy=False)]
    best = _best(sweep.study)
    outcome = SweepOutcome(sweep.name, sweep.storage, trials, best, None)
    if best is None:
        return outcome
    preset_tree = trial_tree(sweep.base, best.params)
    preset_tree.get("run", {}).pop("seeds", None)
    target = request.export or sweep.registry.root / "presets" / f"{_safe(sweep.name)}.yaml"
    export_preset(target, preset_tree, study=sweep.name, storage=sweep.storage, trial=best)
    outcome.preset = target
    if request.final_seeds:
        final = trial_tree(preset_tree, {"run.seeds": list(request.final_seeds)})
        result = runner.execute(resolve_config(final, sweep.host), sweep.host, sweep.registry,
                                tags={"study": sweep.name, "final": True, "best_trial": best.number,
                                      "storage": sweep.storage})
        outcome.final_run_id, outcome.final_metrics = result.run_id, result.metrics
    return outcome


def run_sweep(request: SweepRequest, host: PluginHost, registry: Registry) -> SweepOutcome:
    """One worker, start to end: prepare, run this worker's trials, export the best, optionally test it."""
    sweep = prepare_sweep(request, host, registry)
    run_trials(sweep)
    return conclude(sweep)


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    return TrialRecord(trial.number, trial.state.name.lower(), trial.value, dict(trial.params),
                       trial.user_attrs.get("run_id"))


def _best(study: optuna.Study) -> TrialRecord | None:
    try:
        return _record(study.best_trial)
    except ValueError:
        return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def export_preset(path: Path, tree: Mapping[str, Any], study: str, storage: str, trial: TrialRecord) -> None:
    """Write the best configuration as a run config (``rsitr-bench run --config PATH``), with its origin."""
    header = (f"# Best configuration of study {study!r} ({storage}): trial {trial.number}, validation mR "
              f"{trial.value:.2f}.\n# Parameters: {json.dumps(trial.params)}\n"
              f"# Evaluate it on test with: rsitr-bench run --config {path} --seeds 0,1,2\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, header + yaml.safe_dump(dict(tree), sort_keys=False))


# ------------------------------------------------------------------------------------------ many workers


def launch_workers(argv: Sequence[str], gpus: Sequence[str], echo: Callable[[str], None] = print) -> int:
    """Start one ``rsitr-bench`` worker per GPU (``CUDA_VISIBLE_DEVICES=<gpu>``) and wait for all of them.

    Every worker joins the same study through the shared storage; the exit status is the worst of them.
    """
    procs = []
    for gpu in gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        procs.append(subprocess.Popen([sys.executable, "-m", "rsitr_bench", *argv], env=env))
        echo(f"worker {len(procs)} started on GPU {gpu} (pid {procs[-1].pid})")
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)

