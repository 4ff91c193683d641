"""A registry several processes and machines share: concurrent writers, killed writers, PostgreSQL, `runs import`.

The PostgreSQL variants run only when ``RSITR_TEST_POSTGRES_URL`` names a throw-away server (CI starts one on
loopback with ``.ci/start-postgres.sh``); each test keeps to a dataset name of its own, so runs left in that
database by earlier tests never count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.harness.registry import INDEX_NAME, RUNS, Registry
from rsitr_bench.reports.model import build_report
from tests.fixtures.runs import fake_run

REPO = Path(__file__).resolve().parents[1]
WORKERS, RUNS_PER_WORKER = 4, 10

# One writer: waits for the start file so that all writers record at the same time, then records its runs and
# prints their ids.
_WRITER = """
import sys, time
from pathlib import Path
from rsitr_bench.harness.registry import Registry
from tests.fixtures.runs import fake_run
root, index, dataset, worker, go = sys.argv[1:6]
registry = Registry(Path(root), index_url=index or None)
while not Path(go).exists():
    time.sleep(0.01)
for i in range(int(sys.argv[6])):
    print(fake_run(registry, f"writer{worker}", 0.5, dataset=dataset, rng_offset=i,
                   config={"method": {"name": f"writer{worker}"}}), flush=True)
"""

# A writer killed inside its transaction: it inserts a row, says so, and waits to be killed before committing.
_KILLED = """
import sys, time
from pathlib import Path
from rsitr_bench.harness.registry import RUNS, Registry
root, index, dataset = sys.argv[1:4]
registry = Registry(Path(root), index_url=index or None)
with registry._connect() as db:
    db.execute(RUNS.insert().values(id="doomed-" + dataset, created=0.0, updated=0.0, status="finished",
                                    method="doomed", dataset=dataset))
    print("inserted", flush=True)
    time.sleep(120)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request) -> str | None:
    """None: the default SQLite index in the registry directory; else the PostgreSQL test server's URL."""
    if request.param == "sqlite":
        return None
    url = os.environ.get("RSITR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("RSITR_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against. CI starts one "
                    "with `source .ci/start-postgres.sh`; source it locally (root or sudo) to run this.")
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError as exc:
        pytest.skip(f"RSITR_TEST_POSTGRES_URL is set but SQLAlchemy's PostgreSQL driver is missing ({exc}).")
    return url


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_concurrent_writers_record_every_run_exactly_once(tmp_path, index_url, capsys):
    dataset = f"shared-{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    Registry(tmp_path / "runs", index_url=index_url)  # created once up front, as `rsitr-bench run` would
    writers = [_python(_WRITER, str(tmp_path / "runs"), index_url or "", dataset, str(w), str(go),
                       str(RUNS_PER_WORKER)) for w in range(WORKERS)]
    go.touch()
    recorded = []
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        recorded += out.split()
    assert len(recorded) == len(set(recorded)) == WORKERS * RUNS_PER_WORKER

    registry = Registry(tmp_path / "runs", create=False, index_url=index_url)
    listed = [row.id for row in registry.list(dataset=dataset)]
    assert sorted(listed) == sorted(recorded)
    assert {row.status for row in registry.list(dataset=dataset)} == {"finished"}

    index = ["--registry-index", index_url] if index_url else []
    code, out, _ = _cli(capsys, "--registry", str(tmp_path / "runs"), *index, "runs", "ls", "--dataset", dataset)
    assert code == 0
    assert all(out.count(run_id) == 1 for run_id in recorded)

    (section,) = build_report(registry, None, [dataset], with_published=False, n_boot=50, with_plots=False).sections
    (table,) = section.tables
    shown = [row.record.id for row in table.rows] + table.superseded  # newest per writer, older ones superseded
    assert sorted(shown) == sorted(recorded)


def test_a_writer_killed_inside_its_transaction_leaves_a_consistent_index(tmp_path, index_url):
    dataset = f"killed-{uuid.uuid4().hex[:8]}"
    registry = Registry(tmp_path / "runs", index_url=index_url)
    kept = fake_run(registry, "kept", 0.5, dataset=dataset)
    writer = _python(_KILLED, str(tmp_path / "runs"), index_url or "", dataset)
    try:
        assert writer.stdout.readline().strip() == "inserted", writer.stderr.read()
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.communicate(timeout=60)
    assert writer.returncode == -signal.SIGKILL

    reopened = Registry(tmp_path / "runs", create=False, index_url=index_url)
    assert [row.id for row in reopened.list(dataset=dataset)] == [kept]
    after = fake_run(reopened, "after", 0.5, dataset=dataset)  # the killed writer's lock is gone
    assert [row.id for row in reopened.list(dataset=dataset)] == [kept, after]


def _old_index(root: Path) -> None:
    """A registry recorded before the index held hosts and configurations (the first schema)."""
    root.mkdir(parents=True)
    with sqlite3.connect(root / INDEX_NAME) as db:
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, "
                   "status TEXT NOT NULL, method TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT, fingerprint "
                   "TEXT, seeds TEXT, mr_mean REAL, mr_std REAL, compliant INTEGER, pid INTEGER, metrics TEXT, "
                   "tags TEXT)")
        db.execute("INSERT INTO runs (id, created, updated, status, method, dataset, seeds, mr_mean, metrics, "
                   "tags) VALUES ('old-run', 1.0, 2.0, 'failed', 'm', 'd', '0', NULL, '{}', '{}')")
    db.close()


def test_an_index_of_the_first_schema_is_read_and_upgraded(tmp_path, capsys):
    _old_index(tmp_path / "runs")
    code, out, _ = _cli(capsys, "--registry", str(tmp_path / "runs"), "runs", "ls")
    assert code == 0 and "old-run" in out and "failed" in out
    registry = Registry(tmp_path / "runs")
    (row,) = registry.list()
    assert (row.id, row.host, row.config) == ("old-run", None, None)
    new = fake_run(registry, "m", 0.5)
    assert json.loads(registry.get(new).config) == {"method": {"name": "m"}, "dataset": {"name": "synthetic-rs"}}


def test_reports_read_the_index_and_skip_paired_tests_whose_run_directories_are_elsewhere(tmp_path):
    registry = Registry(tmp_path / "runs")
    best, other = fake_run(registry, "best", 0.6, rng_offset=1), fake_run(registry, "other", 0.2, rng_offset=2)
    shutil.rmtree(registry.run_dir(other))  # recorded on a machine whose run directories this one cannot see
    (section,) = build_report(registry, None, with_published=False, n_boot=50, with_plots=False).sections
    (table,) = section.tables
    assert [row.record.id for row in table.rows] == [best, other]
    verdict = table.rows[1].verdict
    assert verdict.separable is None and other in verdict.reason and "not reachable" in verdict.reason
    assert any(other in note and "not reachable" in note for note in section.notes)


def _two_registries(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    a, b = Registry(tmp_path / "a"), Registry(tmp_path / "b")
    ids = [fake_run(a, "m", 0.5), fake_run(a, "n", 0.4), fake_run(b, "m", 0.3, rng_offset=3)]
    return a.root, b.root, ids


def test_runs_import_merges_registries_idempotently(tmp_path, capsys):
    a, b, ids = _two_registries(tmp_path)
    target = tmp_path / "team"
    code, out, _ = _cli(capsys, "--registry", str(target), "runs", "import", str(a), str(b))
    assert code == 0 and "imported 2 run(s)" in out and "imported 1 run(s)" in out
    merged = Registry(target, create=False)
    rows = {row.id: row.values() for row in merged.list()}
    assert sorted(rows) == sorted(ids)
    assert all((target / run_id / "seeds" / "0" / "ranks.npz").is_file() for run_id in ids)
    assert not list(target.glob(".import-*"))

    code, out, _ = _cli(capsys, "--registry", str(target), "runs", "import", str(a), str(b))
    assert code == 0 and "imported 0 run(s), 2 already here" in out
    assert {row.id: row.values() for row in merged.list()} == rows


def test_runs_import_refuses_a_run_id_recorded_with_other_content(tmp_path, capsys):
    a, b, ids = _two_registries(tmp_path)
    target = tmp_path / "team"
    assert _cli(capsys, "--registry", str(target), "runs", "import", str(a))[0] == 0
    with Registry(target)._connect() as db:
        db.execute(RUNS.update().where(RUNS.c.id == ids[0]).values(mr_mean=99.0))
    code, _, err = _cli(capsys, "--registry", str(target), "runs", "import", str(b), str(a))
    assert code == 2 and ids[0] in err and "different content" in err
    assert ids[2] not in {row.id for row in Registry(target, create=False).list()}  # nothing was imported


def test_runs_import_of_a_directory_without_a_registry_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, "--registry", str(tmp_path / "team"), "runs", "import", str(tmp_path / "empty"))
    assert code == 2 and "holds no run registry" in err
    assert not (tmp_path / "team").exists() and not list((tmp_path / "empty").iterdir())


def test_the_index_url_comes_from_the_environment_or_the_flag(tmp_path, monkeypatch, capsys):
    shared = f"sqlite:///{tmp_path / 'team-index.sqlite'}"
    monkeypatch.setenv("RSITR_BENCH_REGISTRY_URL", shared)
    run_id = fake_run(Registry(tmp_path / "machine-a"), "m", 0.5)
    assert not (tmp_path / "machine-a" / INDEX_NAME).exists() and (tmp_path / "team-index.sqlite").is_file()
    monkeypatch.delenv("RSITR_BENCH_REGISTRY_URL")
    code, out, _ = _cli(capsys, "--registry", str(tmp_path / "machine-b"), "--registry-index", shared, "runs", "ls")
    assert code == 0 and run_id in out
    code, _, err = _cli(capsys, "--registry-index", "not a url", "runs", "ls")
    assert code == 2 and "not a database URL" in err
