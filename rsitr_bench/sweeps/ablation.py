"""Ablation studies: every row of the ladder (:mod:`.ladder`) one recorded run with all the study's seeds.

Why it looks like this:

* **A row is a run.** Each row goes through the same path as ``rsitr-bench run`` (a trained row) or
  ``rsitr-bench eval`` (an untrained row): :func:`~rsitr_bench.harness.config.resolve_config` checks it against
  the method's declared options and :func:`~rsitr_bench.harness.runner.execute` records it with its stamps,
  leakage audit and per-query ranks. The runs are tagged ``{"ablation": STUDY, "row": NAME, ...}``, which is how
  reports find the study and how a rerun finds its rows.
* **Resumable.** A rerun of the same command skips every row already finished, continues an interrupted or
  failed row from its last finished seed (``--resume`` of that run), and starts the rest. A study is bound to its
  configuration: a row recorded with another one (other seeds, data or options) is refused, naming the keys
  that differ, instead of being silently mixed into one table.
* **Fail at start.** Every row's configuration is resolved before the first one runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from rsitr_bench.errors import UserError
from rsitr_bench.harness import runner
from rsitr_bench.harness.config import RunConfig, apply_override, resolve_config
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry, RunRow
from rsitr_bench.sweeps.ladder import TAG, LadderRow, check_method, mps_clip_ladder, select_rows


@dataclass
class PlannedRow:
    """A ladder row with its resolved configuration and what this invocation does with it: ``skip`` (finished
    run ``run_id``), ``resume`` (continue ``run_id``) or ``new``."""

    row: LadderRow
    order: int
    config: RunConfig
    action: str
    run_id: str | None = None

    @property
    def tags(self) -> dict[str, Any]:
        return {"row": self.row.name, "label": self.row.label, "group": self.row.group, "order": self.order}


@dataclass
class Ablation:
    """A checked study: its name, method, dataset and planned rows."""

    study: str
    method: str
    dataset: str
    rows: list[PlannedRow]
    host: PluginHost
    registry: Registry


@dataclass
class RowOutcome:
    """What happened to one row: ``finished`` (``run_id``), ``skipped`` (already finished) or ``failed``."""

    planned: PlannedRow
    status: str
    run_id: str | None
    mr: float | None = None
    error: str = ""


def prepare_ablation(method: str, base_tree: Mapping[str, Any], host: PluginHost, registry: Registry,
                     seeds: list[int] | None = None, study: str | None = None,
                     rows: list[str] | None = None) -> Ablation:
    """Resolve every row of the ladder over ``base_tree`` (``--config``, flags and ``--set``) and decide, from
    the registry, which rows are finished, which continue and which start."""
    base = copy.deepcopy(dict(base_tree))
    apply_override(base, ["method", "name"], method)
    if seeds:
        apply_override(base, ["run", "seeds"], list(seeds))
    spec = host.get("methods", method).spec
    base_options = {k: v for k, v in (base.get("method") or {}).items() if k != "name"}
    check_method(method, spec.options, base_options)
    full = resolve_config(base, host)  # the full method: its perspectives are the study's default localiser
    name = study or f"{method}-{full.dataset}"
    recorded = [r for r in registry.list() if r.tag_dict.get(TAG) == name]
    elsewhere = sorted({(r.method, r.dataset) for r in recorded} - {(method, full.dataset)})
    if elsewhere:
        raise UserError(f"Ablation study {name!r} already holds runs of {elsewhere[0][0]} on {elsewhere[0][1]}; "
                        f"one study ablates one method on one dataset. Pass --study NAME for this one.")
    planned = []
    ladder = mps_clip_ladder(full.method_options.perspectives)
    position = {row.name: i for i, row in enumerate(ladder)}  # table order, whichever rows this call runs
    for row in select_rows(ladder, rows):
        order = position[row.name]
        tree = copy.deepcopy(base)
        for key, value in row.options.items():
            apply_override(tree, ["method", key], value)
        config = resolve_config(tree, host)
        planned.append(_plan(row, order, config, [r for r in recorded if r.tag_dict.get("row") == row.name],
                             registry, host, name))
    return Ablation(name, method, full.dataset, planned, host, registry)


def _plan(row: LadderRow, order: int, config: RunConfig, recorded: list[RunRow], registry: Registry,
          host: PluginHost, study: str) -> PlannedRow:
    """Skip the row if a run of it finished, resume the newest unfinished one, else start one; refuse a run of
    this row recorded with another configuration."""
    wanted = measured(config.to_dict())
    for run in reversed(recorded):
        recorded_config = _recorded_config(registry, run, host)
        if recorded_config is not None and recorded_config != wanted:
            diff = ", ".join(_differences(recorded_config, wanted)[:6])
            raise UserError(f"Ablation study {study!r} already has row {row.name!r} as run {run.id}, recorded with "
                            f"another configuration ({diff}). Continue that study with its own settings, pass "
                            f"--study NAME to start another one, or remove its runs (`rsitr-bench runs rm ID`).")
        status = run.effective_status
        if status == "finished":
            return PlannedRow(row, order, config, "skip", run.id)
        if status == "running":
            raise UserError(f"Row {row.name!r} of ablation study {study!r} is running as run {run.id} in "
                            f"process {run.pid} on {run.host or 'this machine'}; wait for it or stop it first.")
        if recorded_config is not None:
            return PlannedRow(row, order, config, "resume", run.id)
    return PlannedRow(row, order, config, "new")


def measured(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration tree without what only says where and how it ran (device, progress, sample logs, data
    location): two rows measure the same thing when these are equal. The seeds stay."""
    out = copy.deepcopy(dict(tree))
    out["run"] = {"seeds": list((out.get("run") or {}).get("seeds") or [])}
    (out.get("data") or {}).pop("root", None)
    (out.get("train") or {}).pop("tensorboard", None)
    return out


def _recorded_config(registry: Registry, run: RunRow, host: PluginHost) -> dict[str, Any] | None:
    """The measured configuration of a recorded run, resolved with today's plugins (None: unreadable)."""
    try:
        tree = yaml.safe_load(run.config) if run.config else \
            yaml.safe_load((registry.run_dir(run.id) / "config.yaml").read_text())
        return measured(resolve_config(tree, host).to_dict())
    except (OSError, yaml.YAMLError, UserError, TypeError):
        return None


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: recorded → wanted`` for every leaf that differs."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} recorded, {y!r} now")
    return out


def run_ablation(ablation: Ablation, on_row: Callable[[PlannedRow], None] | None = None,
                 on_done: Callable[[RowOutcome], None] | None = None) -> list[RowOutcome]:
    """Run the planned rows in order. A row that fails is recorded as failed and the next row starts (a rerun
    continues it); Ctrl-C stops the study, which a rerun of the same command continues."""
    outcomes = []
    for planned in ablation.rows:
        if on_row is not None:
            on_row(planned)
        outcome = _run_row(ablation, planned)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def _run_row(ablation: Ablation, planned: PlannedRow) -> RowOutcome:
    if planned.action == "skip":
        return RowOutcome(planned, "skipped", planned.run_id)
    tags = {TAG: ablation.study, **planned.tags}
    hint = "rerun the same `rsitr-bench ablate` command to continue the study"
    try:
        outcome = runner.execute(planned.config, ablation.host, ablation.registry, tags=tags,
                                 resume_id=planned.run_id if planned.action == "resume" else None,
                                 fit=planned.row.fit, continue_hint=hint)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the run is recorded as failed; the study goes on and a rerun continues it
        return RowOutcome(planned, "failed", _newest_run(ablation, planned), error=f"{type(exc).__name__}: {exc}")
    return RowOutcome(planned, "finished", outcome.run_id, float(outcome.metrics["summary"]["mR"]["mean"]))


def _newest_run(ablation: Ablation, planned: PlannedRow) -> str | None:
    for run in reversed(ablation.registry.list(ablation.method, ablation.dataset)):
        tags = run.tag_dict
        if tags.get(TAG) == ablation.study and tags.get("row") == planned.row.name:
            return run.id
    return None

