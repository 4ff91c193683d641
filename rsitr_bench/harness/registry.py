"""The run registry: one directory per run plus an SQLite index that reports read.

Layout of a run directory::

    <registry>/<run-id>/
        config.yaml         the resolved configuration (``--resume`` rebuilds the run from it)
        environment.json    package versions, torch/CUDA, device, git SHA, plugin distributions
        status.json         running | finished | failed, with timestamps
        run.log             the run's log
        seeds/<seed>/       per-seed metrics.json and ranks.npz (per-query ranks, both directions),
                            plus whatever the method checkpoints there
        metrics.json        the aggregated result, written last

Every file is written atomically, and the index row changes inside one SQLite transaction, so a run killed
at any moment leaves either the previous state or the new one. A run whose status is still ``running`` and
whose process is gone is an interrupted run: ``rsitr-bench run --resume RUN_ID`` continues it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsitr_bench.errors import UserError
from rsitr_bench.harness.atomic import write_json_atomic

INDEX_NAME = "index.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    split TEXT,
    fingerprint TEXT,
    seeds TEXT,
    mr_mean REAL,
    mr_std REAL,
    compliant INTEGER,
    pid INTEGER,
    metrics TEXT,
    tags TEXT
)
"""


@dataclass
class RunRow:
    """One run as the index records it."""

    id: str
    created: float
    updated: float
    status: str
    method: str
    dataset: str
    split: str | None
    fingerprint: str | None
    seeds: str | None
    mr_mean: float | None
    mr_std: float | None
    compliant: int | None
    pid: int | None
    metrics: str | None
    tags: str | None

    @property
    def tag_dict(self) -> dict[str, Any]:
        return json.loads(self.tags) if self.tags else {}

    @property
    def effective_status(self) -> str:
        """``interrupted`` for a run marked running whose process no longer exists."""
        if self.status == "running" and not _pid_alive(self.pid):
            return "interrupted"
        return self.status


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NoRegistryError(UserError):
    """A read-only command was pointed at a directory that holds no run registry."""


class Registry:
    """Run directories plus their SQLite index.

    ``create=False`` opens an existing registry only: commands that just read it (``runs ls``, ``runs show``,
    ``report``) must not leave an empty registry behind wherever a mistyped ``--registry`` points.
    """

    def __init__(self, root: Path, create: bool = True):
        self.root = Path(root).expanduser()
        if not create:
            if not (self.root / INDEX_NAME).is_file():
                raise NoRegistryError(f"There is no run registry at {self.root} (no {INDEX_NAME} there). Pass "
                                      f"--registry DIR with the directory your runs were recorded in, or set "
                                      f"RSITR_BENCH_HOME; `rsitr-bench run` creates a registry.")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"The run registry directory {self.root} is not writable ({exc.strerror or exc}). "
                            f"Pass --registry DIR or set RSITR_BENCH_HOME to a directory you can write.") from None
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / INDEX_NAME, timeout=30)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def new_run_id(self, method: str, dataset: str) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{method}-{dataset}-{os.urandom(3).hex()}"

    def create(self, run_id: str, method: str, dataset: str, split: str, fingerprint: str, seeds: list[int],
               tags: dict[str, Any] | None = None) -> Path:
        """Create a run directory and its index row (status ``running``).

        ``tags`` link a run to its context, e.g. ``{"study": NAME, "trial": 3}`` for sweep trials.
        """
        path = self.run_dir(run_id)
        path.mkdir(parents=True, exist_ok=False)
        now = time.time()
        write_json_atomic(path / "status.json", {"status": "running", "created": now, "pid": os.getpid()})
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, created, updated, status, method, dataset, split, fingerprint, seeds, pid, tags)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (run_id, now, now, method, dataset, split, fingerprint, ",".join(map(str, seeds)), os.getpid(),
                 json.dumps(tags or {})))
        return path

    def mark_running(self, run_id: str) -> None:
        """Claim an interrupted run for ``--resume``."""
        row = self.get(run_id)
        if row.effective_status == "running":
            raise UserError(f"Run {run_id} is still running in process {row.pid}; wait for it or stop it first.")
        status = self._read_status(run_id)
        status.update(status="running", pid=os.getpid(), resumed=time.time())
        write_json_atomic(self.run_dir(run_id) / "status.json", status)
        with self._connect() as db:
            db.execute("UPDATE runs SET status='running', pid=?, updated=? WHERE id=?",
                       (os.getpid(), time.time(), run_id))

    def finish(self, run_id: str, metrics: dict[str, Any], status: str = "finished") -> None:
        """Record the final state: metrics.json is already written; update status.json, then the index."""
        state = self._read_status(run_id)
        state.update(status=status, finished=time.time())
        write_json_atomic(self.run_dir(run_id) / "status.json", state)
        summary = metrics.get("summary", {}).get("mR", {})
        compliant = metrics.get("compliance", {}).get("compliant")
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status=?, updated=?, mr_mean=?, mr_std=?, compliant=?, metrics=? WHERE id=?",
                (status, time.time(), summary.get("mean"), summary.get("std"),
                 None if compliant is None else int(bool(compliant)), json.dumps(metrics, default=str), run_id))

    def _read_status(self, run_id: str) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir(run_id) / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def get(self, run_id: str) -> RunRow:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                matches = db.execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created",
                                     (len(run_id), run_id)).fetchall()
                if len(matches) == 1:
                    row = matches[0]
                elif len(matches) > 1:
                    shown = ", ".join(m[0] for m in matches[:10])
                    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
                    raise UserError(f"Run id {run_id!r} is an ambiguous prefix: {shown}{more}. Give more of "
                                    f"the id.")
        if row is None:
            raise UserError(f"No run {run_id!r} in the registry at {self.root}. `rsitr-bench runs ls` lists the "
                            f"runs there (use --registry if they were recorded elsewhere).")
        return RunRow(*row)

    def list(self, method: str | None = None, dataset: str | None = None) -> list[RunRow]:
        query, args = "SELECT * FROM runs", []
        clauses = []
        if method:
            clauses.append("method=?")
            args.append(method)
        if dataset:
            clauses.append("dataset=?")
            args.append(dataset)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._connect() as db:
            return [RunRow(*r) for r in db.execute(query + " ORDER BY created", args).fetchall()]

    def remove(self, run_id: str) -> str:
        row = self.get(run_id)
        if row.effective_status == "running":
            raise UserError(f"Run {row.id} is still running in process {row.pid}; stop it before removing it.")
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE id=?", (row.id,))
        shutil.rmtree(self.run_dir(row.id), ignore_errors=True)
        return row.id
