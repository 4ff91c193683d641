"""Two worker processes share one study: no trial lost, none duplicated, every trial a registered run.

The same test runs against a journal file (always) and a real PostgreSQL server (when
``RSITR_TEST_POSTGRES_URL`` is set; CI starts one on loopback with ``.ci/start-postgres.sh``).
The workers are real ``rsitr-bench sweep`` processes on the zero-shot ``global-clip`` (cheap on CPU),
searching its random-init seed from a user search-space file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from rsitr_bench.harness.registry import Registry
from rsitr_bench.sweeps.study import open_storage

TRIALS_PER_WORKER = 3



def _run_two_workers(tmp_path: Path, storage: str, study: str) -> list[subprocess.CompletedProcess]:
    space = tmp_path / "space.yaml"
    space.write_text("method.init_seed: {type: int, low: 0, high: 100000}\n")
    argv = ["sweep", "--method", "global-clip", "--n-trials", str(TRIALS_PER_WORKER), "--storage", storage,
            "--study", study, "--search-space", str(space), "--no-progress", "--pruner", "none",
            "--set", "dataset.n_train=8", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "rsitr_bench", *argv], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    return results


def _check_shared_study(tmp_path: Path, storage: str, study_name: str) -> None:
    results = _run_two_workers(tmp_path, storage, study_name)
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:]
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(2 * TRIALS_PER_WORKER)), numbers  # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    registry = Registry(Path(os.environ["RSITR_BENCH_HOME"]) / "runs")
    runs = [r for r in registry.list("global-clip", "synthetic-rs") if r.tag_dict.get("study") == study_name]
    assert sorted(r.tag_dict["trial"] for r in runs) == sorted(numbers)
    for trial in trials:
        row = registry.get(trial.user_attrs["run_id"])
        assert row.status == "finished" and row.tag_dict["trial"] == trial.number
        assert row.split == "val"
    pids = {r.pid for r in runs}
    assert len(pids) == 2, "both workers ran trials"


@pytest.mark.slow
def test_two_workers_share_a_journal_file_study(tmp_path):
    _check_shared_study(tmp_path, f"journal:{tmp_path / 'shared' / 'study.log'}", "journal-two-workers")


def test_two_workers_share_a_postgresql_study(tmp_path):
    url = os.environ.get("RSITR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("RSITR_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against. CI starts "
                    "one with `source .ci/start-postgres.sh`; source it locally (root or sudo) to run this.")
    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError as exc:
        pytest.skip(f"RSITR_TEST_POSTGRES_URL is set but SQLAlchemy's PostgreSQL driver is missing ({exc}); "
                    f"install it with `pip install 'psycopg[binary]'`.")
    _check_shared_study(tmp_path, url, f"pg-two-workers-{uuid.uuid4().hex[:8]}")
