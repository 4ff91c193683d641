"""Two worker processes share one study: no trial lost, none duplicated, every trial a registered run.

The same test runs against a journal file (always) and a real PostgreSQL server (when
``RSITR_TEST_POSTGRES_URL`` is set; CI starts one on loopback with ``.ci/start-postgres.sh``).
The workers are real ``rsitr-bench sweep`` processes on the zero-shot ``global-clip`` (cheap on CPU),
searching its random-init seed from a user search-space file.

On PostgreSQL the workers play two machines: each has its own ``RSITR_BENCH_HOME`` (run directories), and
the registry index lives on the same server as the study. A report made from a third home, which holds no
run directory at all, must list every trial of both workers.
"""

from __future__ import annotations

import json
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



def _run_two_workers(tmp_path: Path, storage: str, study: str, index_url: str | None
                     ) -> list[subprocess.CompletedProcess]:
    space = tmp_path / "space.yaml"
    space.write_text("method.init_seed: {type: int, low: 0, high: 100000}\n")
    argv = ["sweep", "--method", "global-clip", "--n-trials", str(TRIALS_PER_WORKER), "--storage", storage,
            "--study", study, "--search-space", str(space), "--no-progress", "--pruner", "none",
            "--set", "dataset.n_train=8", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8"]
    envs = [dict(os.environ, HF_HUB_OFFLINE="1") for _ in range(2)]
    if index_url is not None:  # two "machines": own run directories, one index beside the study
        for i, env in enumerate(envs):
            env.update(RSITR_BENCH_HOME=str(tmp_path / f"machine-{i}"), RSITR_BENCH_REGISTRY_URL=index_url)
    procs = [subprocess.Popen([sys.executable, "-m", "rsitr_bench", *argv], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for env in envs]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    return results


def _check_shared_study(tmp_path: Path, storage: str, study_name: str, index_url: str | None = None) -> None:
    results = _run_two_workers(tmp_path, storage, study_name, index_url)
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:]
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(2 * TRIALS_PER_WORKER)), numbers  # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    registry = Registry(Path(os.environ["RSITR_BENCH_HOME"]) / "runs", index_url=index_url)
    runs = [r for r in registry.list("global-clip", "synthetic-rs") if r.tag_dict.get("study") == study_name]
    assert sorted(r.tag_dict["trial"] for r in runs) == sorted(numbers)
    for trial in trials:
        row = registry.get(trial.user_attrs["run_id"])
        assert row.status == "finished" and row.tag_dict["trial"] == trial.number
        assert row.split == "val"
    pids = {r.pid for r in runs}
    assert len(pids) == 2, "both workers ran trials"
    if index_url is not None:
        _check_report_from_a_third_machine(tmp_path, study_name, index_url, sorted(numbers))


def _check_report_from_a_third_machine(tmp_path: Path, study_name: str, index_url: str,
                                       numbers: list[int]) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", RSITR_BENCH_HOME=str(tmp_path / "machine-report"),
               RSITR_BENCH_REGISTRY_URL=index_url)
    out = subprocess.run([sys.executable, "-m", "rsitr_bench", "report", "--format", "json", "--no-published",
                          "--dataset", "synthetic-rs"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (section,) = json.loads(out.stdout)["datasets"]
    (study,) = [s for s in section["sweeps"] if s["study"] == study_name]
    assert sorted(t["number"] for t in study["trials"]) == numbers


@pytest.mark.slow
def test_two_workers_share_a_journal_file_study(tmp_path):
    _check_shared_study(tmp_path, f"journal:{tmp_path / 'shared' / 'study.log'}", "journal-two-workers")


@pytest.mark.slow
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
    _check_shared_study(tmp_path, url, f"pg-two-workers-{uuid.uuid4().hex[:8]}", index_url=url)
