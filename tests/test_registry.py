"""The run registry: atomic writes, SQLite index, status tracking, removal."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rsitr_bench.errors import UserError
from rsitr_bench.harness.atomic import write_json_atomic
from rsitr_bench.harness.registry import RUNS, Registry


def test_create_finish_and_list(tmp_path):
    reg = Registry(tmp_path / "runs")
    run_id = reg.new_run_id("m", "d")
    path = reg.create(run_id, "m", "d", "test", "abc", [0, 1])
    assert (path / "status.json").is_file()
    assert reg.get(run_id).status == "running"
    reg.finish(run_id, {"summary": {"mR": {"mean": 12.5, "std": 0.5, "n": 2}}, "compliance": {"compliant": True}})
    row = reg.get(run_id[:20])  # unique prefixes resolve
    assert (row.status, row.mr_mean, row.mr_std, row.compliant) == ("finished", 12.5, 0.5, 1)
    assert json.loads((path / "status.json").read_text())["status"] == "finished"
    assert [r.id for r in reg.list(method="m")] == [run_id]
    assert reg.list(method="other") == []


def test_dead_running_run_shows_as_interrupted(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.new_run_id("m", "d")
    reg.create(run_id, "m", "d", "test", "abc", [0])
    with reg._connect() as db:
        db.execute(RUNS.update().where(RUNS.c.id == run_id).values(pid=2**22 + 12345))
    assert reg.get(run_id).effective_status == "interrupted"
    reg.mark_running(run_id)
    assert reg.get(run_id).pid == os.getpid()


def test_remove(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.new_run_id("m", "d")
    reg.create(run_id, "m", "d", "test", "abc", [0])
    reg.finish(run_id, {})
    reg.remove(run_id)
    assert not reg.run_dir(run_id).exists()
    with pytest.raises(UserError, match="No run"):
        reg.get(run_id)


def test_atomic_write_keeps_old_content_when_the_writer_dies(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"v": 1})

    class Boom(Exception):
        pass

    def dying_writer(obj):
        raise Boom

    with pytest.raises(Boom):
        write_json_atomic(target, {"v": 2, "bad": object.__new__(type("X", (), {"__str__": dying_writer}))})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_registry_is_a_user_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(UserError, match="not writable"):
        Registry(locked / "runs")


def test_registry_on_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        Registry(blocker / "runs")
