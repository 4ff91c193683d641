"""The run registry: one directory per run plus an index (SQLite, or a shared database) that reports read.

Layout of a run directory::

    <registry>/<run-id>/
        config.yaml         the resolved configuration (``--resume`` rebuilds the run from it)
        environment.json    package versions, torch/CUDA, device, git SHA, plugin distributions
        status.json         running | finished | failed, with timestamps
        run.log             the run's log
        seeds/<seed>/       per-seed metrics.json and ranks.npz (per-query ranks, both directions),
                            plus whatever the method checkpoints there
        metrics.json        the aggregated result, written last

The index is ``index.sqlite`` in the registry directory (WAL journal, busy timeout, so several processes of one
machine record runs at once), or any SQLAlchemy database URL (``RSITR_BENCH_REGISTRY_URL`` /
``--registry-index``, e.g. ``postgresql://...``), which several machines share: SQLite over NFS is not safe for
concurrent writers. Each index row holds the run's result and configuration, so reports on any machine see every
run without its directory; only the paired tests need the per-query ranks in the run directories.

Every file is written atomically, and each index change is one database transaction, so a run killed at any
moment leaves either the previous state or the new one. A run whose status is still ``running`` and whose
process is gone is an interrupted run: ``rsitr-bench run --resume RUN_ID`` continues it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from rsitr_bench.errors import UserError
from rsitr_bench.harness.atomic import write_json_atomic
from rsitr_bench.harness.paths import registry_index_url

INDEX_NAME = "index.sqlite"
_BUSY_TIMEOUT_MS = 30_000

_METADATA = MetaData()
RUNS = Table(
    "runs", _METADATA,
    Column("id", String(255), primary_key=True),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("method", String(255), nullable=False),
    Column("dataset", String(255), nullable=False),
    Column("split", String(255)),
    Column("fingerprint", String(255)),
    Column("seeds", Text),
    Column("mr_mean", Float),
    Column("mr_std", Float),
    Column("compliant", Integer),
    Column("pid", Integer),
    Column("metrics", Text),
    Column("tags", Text),
    # Added after the first schema (registries without them are upgraded when opened): the machine whose
    # process ``pid`` is, and the run's configuration as JSON, so reports need no run directory.
    Column("host", String(255)),
    Column("config", Text),
)
_PG_SCHEMA_LOCK = 0x7273_6974  # advisory lock id: concurrent first opens of a PostgreSQL index create it once


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
    host: str | None = None
    config: str | None = None

    @property
    def tag_dict(self) -> dict[str, Any]:
        return json.loads(self.tags) if self.tags else {}

    @property
    def effective_status(self) -> str:
        """``interrupted`` for a run marked running whose process no longer exists.

        Only a process of this machine can be checked: a run another machine records in a shared index keeps
        the status it has there.
        """
        if self.status == "running" and (not self.host or self.host == socket.gethostname()) \
                and not _pid_alive(self.pid):
            return "interrupted"
        return self.status

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers work while one process writes; the busy timeout makes writers queue, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def sqlite_index(root: Path) -> URL:
    """The URL of the SQLite index in registry directory ``root`` (any characters in the path are safe)."""
    return URL.create("sqlite", database=str(Path(root).expanduser() / INDEX_NAME))


def _engine(url: str | URL) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"The registry index {url!r} is not a database URL; give e.g. "
                        f"postgresql+psycopg://user:password@host/db (or leave it unset for SQLite).") from None
    try:
        engine = create_engine(parsed, poolclass=NullPool)
    except ImportError as exc:
        raise UserError(f"The registry index {parsed.render_as_string(hide_password=True)} needs a database "
                        f"driver that is not installed ({exc}); for PostgreSQL: pip install 'psycopg[binary]'.") \
            from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Registry:
    """Run directories plus their index.

    ``create=False`` opens an existing registry only: commands that just read it (``runs ls``, ``runs show``,
    ``report``) must not leave an empty registry behind wherever a mistyped ``--registry`` points.
    ``index_url`` (default: ``RSITR_BENCH_REGISTRY_URL``, else ``index.sqlite`` in ``root``) names the index;
    the run directories stay under ``root``, which several machines may share.
    """

    def __init__(self, root: Path, create: bool = True, index_url: str | URL | None = None):
        self.root = Path(root).expanduser()
        self.index_url = index_url or registry_index_url()
        self._engine = _engine(self.index_url or sqlite_index(self.root))
        database = self._engine.url.database
        if not create and self._engine.dialect.name == "sqlite" and not (database and Path(database).is_file()):
            raise NoRegistryError(f"There is no run registry at {self.root} (no {INDEX_NAME} there). Pass "
                                  f"--registry DIR with the directory your runs were recorded in, or set "
                                  f"RSITR_BENCH_HOME; `rsitr-bench run` creates a registry.")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise UserError(f"The run registry directory {self.root} is not writable ({exc.strerror or exc}). "
                                f"Pass --registry DIR or set RSITR_BENCH_HOME to a directory you can write.") \
                    from None
        self._ensure_schema(create)

    @property
    def index_name(self) -> str:
        """The index as users may see it (no password)."""
        return self._engine.url.render_as_string(hide_password=True)

    def _ensure_schema(self, create: bool) -> None:
        """Create the ``runs`` table (``create``) or check it exists, and add the columns an older one lacks.

        Several processes may open a new registry at once: PostgreSQL serialises them with an advisory lock;
        on SQLite the loser of a race sees the table or column just added and the next attempt finds no work.
        """
        for attempt in range(3):
            try:
                with self._engine.begin() as db:
                    if db.dialect.name == "postgresql":
                        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
                    if not inspect(db).has_table(RUNS.name):
                        if not create:
                            raise NoRegistryError(
                                f"The registry index {self.index_name} holds no runs table: no run was recorded "
                                f"there. Check --registry-index / RSITR_BENCH_REGISTRY_URL.")
                        RUNS.create(db)
                        return
                    self._add_missing_columns(db)
                return
            except (OperationalError, ProgrammingError) as exc:
                if attempt == 2:
                    raise UserError(f"The registry index {self.index_name} cannot be opened: {exc.orig}") from None

    @staticmethod
    def _add_missing_columns(db: Connection) -> None:
        present = {c["name"] for c in inspect(db).get_columns(RUNS.name)}
        for column in RUNS.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=db.dialect)
                db.execute(text(f"ALTER TABLE {RUNS.name} ADD COLUMN {column.name} {kind}"))

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on error."""
        with self._engine.begin() as db:
            yield db

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
            db.execute(RUNS.insert().values(
                id=run_id, created=now, updated=now, status="running", method=method, dataset=dataset, split=split,
                fingerprint=fingerprint, seeds=",".join(map(str, seeds)), pid=os.getpid(),
                host=socket.gethostname(), tags=json.dumps(tags or {})))
        return path

    def mark_running(self, run_id: str) -> None:
        """Claim an interrupted run for ``--resume``."""
        row = self.get(run_id)
        if row.effective_status == "running":
            raise UserError(f"Run {run_id} is still running in process {row.pid} on {row.host or 'this machine'}; "
                            f"wait for it or stop it first.")
        status = self._read_status(run_id)
        status.update(status="running", pid=os.getpid(), resumed=time.time())
        write_json_atomic(self.run_dir(run_id) / "status.json", status)
        with self._connect() as db:
            db.execute(RUNS.update().where(RUNS.c.id == run_id).values(
                status="running", pid=os.getpid(), host=socket.gethostname(), updated=time.time()))

    def finish(self, run_id: str, metrics: dict[str, Any], status: str = "finished") -> None:
        """Record the final state: metrics.json is already written; update status.json, then the index.

        The index row gets the result and the configuration too, so reports read the index alone.
        """
        state = self._read_status(run_id)
        state.update(status=status, finished=time.time())
        write_json_atomic(self.run_dir(run_id) / "status.json", state)
        summary = metrics.get("summary", {}).get("mR", {})
        compliant = metrics.get("compliance", {}).get("compliant")
        with self._connect() as db:
            db.execute(RUNS.update().where(RUNS.c.id == run_id).values(
                status=status, updated=time.time(), mr_mean=summary.get("mean"), mr_std=summary.get("std"),
                compliant=None if compliant is None else int(bool(compliant)),
                metrics=json.dumps(metrics, default=str), config=self._read_config(run_id)))

    def _read_status(self, run_id: str) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir(run_id) / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def _read_config(self, run_id: str) -> str | None:
        try:
            tree = yaml.safe_load((self.run_dir(run_id) / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        return json.dumps(tree, default=str) if isinstance(tree, dict) else None

    def get(self, run_id: str) -> RunRow:
        with self._connect() as db:
            row = db.execute(RUNS.select().where(RUNS.c.id == run_id)).fetchone()
            if row is None:
                matches = db.execute(RUNS.select().where(RUNS.c.id.startswith(run_id, autoescape=True))
                                     .order_by(RUNS.c.created)).fetchall()
                if len(matches) == 1:
                    row = matches[0]
                elif len(matches) > 1:
                    shown = ", ".join(m.id for m in matches[:10])
                    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
                    raise UserError(f"Run id {run_id!r} is an ambiguous prefix: {shown}{more}. Give more of "
                                    f"the id.")
        if row is None:
            raise UserError(f"No run {run_id!r} in the registry at {self.root}. `rsitr-bench runs ls` lists the "
                            f"runs there (use --registry if they were recorded elsewhere).")
        return RunRow(**row._mapping)

    def list(self, method: str | None = None, dataset: str | None = None) -> list[RunRow]:
        query = RUNS.select()
        if method:
            query = query.where(RUNS.c.method == method)
        if dataset:
            query = query.where(RUNS.c.dataset == dataset)
        with self._connect() as db:
            return [RunRow(**r._mapping) for r in db.execute(query.order_by(RUNS.c.created, RUNS.c.id))]

    def datasets(self) -> list[str]:
        """The datasets of the recorded runs, sorted, without reading the runs themselves."""
        with self._connect() as db:
            return sorted(db.execute(select(RUNS.c.dataset).distinct()).scalars())

    def remove(self, run_id: str) -> str:
        row = self.get(run_id)
        if row.effective_status == "running":
            raise UserError(f"Run {row.id} is still running in process {row.pid}; stop it before removing it.")
        with self._connect() as db:
            db.execute(RUNS.delete().where(RUNS.c.id == row.id))
        shutil.rmtree(self.run_dir(row.id), ignore_errors=True)
        return row.id

    def import_from(self, source: Registry) -> tuple[list[str], list[str]]:
        """Merge ``source``'s runs into this registry; return the run ids added and those already here.

        Idempotent: a run already recorded with the same index row is skipped. A run id recorded here with
        different content is refused before anything is copied (run ids are unique, so it is not the same run;
        :meth:`check_importable`).
        Each run directory is copied under a temporary name and renamed into place before its row is inserted,
        so the index never names a half-copied directory; a directory left by an import killed between the two
        steps has no row and is replaced by the next import.
        """
        self.check_importable(source)
        existing = {row.id for row in self.list()}
        added, present = [], []
        for row in source.list():
            if row.id in existing:
                present.append(row.id)
                continue
            self._copy_run_dir(source.run_dir(row.id), self.run_dir(row.id))
            with self._connect() as db:
                db.execute(RUNS.insert().values(**row.values()))
            added.append(row.id)
        return added, present

    def check_importable(self, source: Registry) -> None:
        """Refuse, naming them, the run ids ``source`` shares with this registry but with other content."""
        existing = {row.id: row for row in self.list()}
        conflicts = [row.id for row in source.list()
                     if row.id in existing and existing[row.id].values() != row.values()]
        if conflicts:
            raise UserError(f"Run id {conflicts[0]} is recorded both here ({self.root}) and in {source.root} "
                            f"with different content; nothing was imported. Remove one of them (`rsitr-bench "
                            f"runs rm`) or import the other runs from a copy without it."
                            + (f" Also conflicting: {', '.join(conflicts[1:])}." if len(conflicts) > 1 else ""))

    def _copy_run_dir(self, source: Path, target: Path) -> None:
        if not source.is_dir() or source.resolve() == target.resolve():
            return  # the index row alone carries what reports need
        staging = target.with_name(f".import-{target.name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        if target.exists():
            shutil.rmtree(target)  # no index row names it: left by an import killed before its insert
        os.rename(staging, target)
