"""Reading runs back from the registry for reports: finished test runs and sweep trials.

A report shows only what the registry can vouch for: finished runs whose result was computed on the *test*
split. Sweep trials (validation-only runs) feed the optimisation plots, never the leaderboard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rsitr_bench.errors import UserError
from rsitr_bench.harness.registry import Registry, RunRow

# Configuration keys that do not change what a run measures (where it ran, how it printed or logged).
_NEUTRAL_PREFIXES = ("run.", "data.root", "train.tensorboard")


@dataclass
class RunRecord:
    """One finished run with what reports need, from the registry index (per-query ranks: its directory)."""

    id: str
    method: str
    dataset: str
    created: float
    status: str
    result: dict[str, Any]
    config: dict[str, Any]
    tags: dict[str, Any]
    run_dir: Path

    @property
    def role(self) -> str:
        """``test`` or ``val``: which split role the recorded result scores."""
        role = self.result.get("split_role")
        if role:
            return str(role)
        fingerprints = self.result.get("fingerprints") or {}
        test = fingerprints.get("test") or {}
        return "test" if test and test.get("split") == self.result.get("split") else "val"

    @property
    def fingerprint(self) -> dict[str, Any]:
        return (self.result.get("fingerprints") or {}).get(self.role) or {}

    @property
    def compliant(self) -> bool:
        """Rankable: compliant and comparable (a ``--limit`` smoke test scored part of the split only)."""
        return bool((self.result.get("compliance") or {}).get("compliant", True)) and \
            self.result.get("comparable", True) is not False

    @property
    def reasons(self) -> list[str]:
        return list((self.result.get("compliance") or {}).get("reasons") or [])

    @property
    def comparability_key(self) -> tuple[Any, ...]:
        """Runs share a table only when this is equal: same split content, protocol, ties and ks."""
        r = self.result
        return (self.fingerprint.get("sha256"), r.get("protocol"), r.get("ties"), tuple(r.get("ks") or ()))

    @property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    @property
    def measured_config(self) -> dict[str, Any]:
        """The flattened configuration minus the keys that only say where and how it ran."""
        return {k: v for k, v in self.flat_config.items() if not k.startswith(_NEUTRAL_PREFIXES)}

    @property
    def config_digest(self) -> str:
        """Equal digests are repeats of one configuration."""
        return json.dumps(self.measured_config, sort_keys=True, default=str)

    @property
    def dir_reachable(self) -> bool:
        """False when the run was recorded on another machine whose run directory this one cannot see."""
        return self.run_dir.is_dir()

    def seed_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-seed arrays of ``seeds/<seed>/ranks.npz`` (ranks, and hits where the runner saved them)."""
        out = {}
        for seed in self.result.get("seeds") or []:
            path = self.run_dir / "seeds" / str(seed) / "ranks.npz"
            if path.is_file():
                with np.load(path) as data:
                    out[str(seed)] = {key: data[key] for key in data.files}
        return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"method": {"name": "x", "k": 2}}`` -> ``{"method.name": "x", "method.k": 2}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _load(registry: Registry, row: RunRow) -> RunRecord | None:
    """The run as the index records it; the run directory only for rows written before the index held the
    configuration (or a result whose row lost it), so a report on another machine needs no run directory."""
    run_dir = registry.run_dir(row.id)
    try:
        result = json.loads(row.metrics) if row.metrics else {}
        if not result and row.status == "finished":
            result = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        config = json.loads(row.config) if row.config else \
            yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        config = {}
    return RunRecord(id=row.id, method=row.method, dataset=row.dataset, created=row.created,
                     status=row.effective_status, result=result, config=config, tags=row.tag_dict,
                     run_dir=run_dir)


def _is_trial(row: RunRow) -> bool:
    tags = row.tag_dict
    return "study" in tags and "trial" in tags


def _test_runs(rows: list[RunRow], load: Callable[[RunRow], RunRecord | None]) -> list[RunRecord]:
    records = []
    for row in rows:
        if row.status != "finished":
            continue
        record = load(row)
        if record is not None and record.result.get("summary") and record.role == "test":
            records.append(record)
    return records


def _trials(rows: list[RunRow], load: Callable[[RunRow], RunRecord | None]) -> dict[str, list[RunRecord]]:
    studies: dict[str, list[RunRecord]] = {}
    for row in rows:
        if not _is_trial(row):
            continue
        record = load(row)
        if record is not None:
            studies.setdefault(str(record.tags["study"]), []).append(record)
    for trials in studies.values():
        trials.sort(key=lambda r: (int(r.tags["trial"]), r.created))
    return studies


def finished_test_runs(registry: Registry, dataset: str | None = None) -> list[RunRecord]:
    """Finished runs scored on the test split, oldest first (sweep trials and unfinished runs left out)."""
    return _test_runs(registry.list(dataset=dataset), partial(_load, registry))


def dataset_runs(registry: Registry, dataset: str) -> tuple[list[RunRecord], dict[str, list[RunRecord]]]:
    """:func:`finished_test_runs` and :func:`sweep_trials` of one dataset from one read of the index, each row
    decoded once: a report over a team's index reads tens of thousands of rows."""
    rows = registry.list(dataset=dataset)
    loaded: dict[str, RunRecord | None] = {}

    def load(row: RunRow) -> RunRecord | None:
        if row.id not in loaded:
            loaded[row.id] = _load(registry, row)
        return loaded[row.id]

    return _test_runs(rows, load), _trials(rows, load)


def finished_test_run(registry: Registry, run_id: str) -> RunRecord:
    """One finished run scored on the test split, by id or unambiguous id prefix; anything else is refused.

    A comparison of a failed run, or of a sweep trial scored on validation, would print numbers that measure
    nothing the leaderboard shows, so the refusal says which of the two it is.
    """
    row = registry.get(run_id)
    if row.status != "finished":
        raise UserError(f"Run {row.id} is {row.effective_status}, not finished: it has no result to compare. "
                        f"`rsitr-bench runs ls` shows each run's status.")
    record = _load(registry, row)
    if record is None or not record.result.get("summary"):
        raise UserError(f"Run {row.id} is marked finished but its result is neither in the index nor in a "
                        f"readable metrics.json in {registry.run_dir(row.id)}.")
    if record.role != "test":
        raise UserError(f"Run {row.id} was scored on the validation split (a sweep trial), not on the test "
                        f"split; compare runs recorded by `rsitr-bench run` or `rsitr-bench eval`.")
    return record


def sweep_trials(registry: Registry, dataset: str) -> dict[str, list[RunRecord]]:
    """Sweep trial runs by study name, in trial order, in every state (pruned and failed ones too)."""
    return _trials(registry.list(dataset=dataset), partial(_load, registry))


class RecordFacts:
    """What every table line reads off its run's record (a line holds ``record: RunRecord``)."""

    record: RunRecord

    @property
    def n_seeds(self) -> int:
        return len(self.record.result.get("seeds") or [])

    @property
    def trainable(self) -> int | None:
        return (self.record.result.get("parameters") or {}).get("trainable")

    @property
    def total(self) -> int | None:
        return (self.record.result.get("parameters") or {}).get("total")
