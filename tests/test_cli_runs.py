"""`rsitr-bench runs compare` and `runs rm --failed/--interrupted`, on runs fabricated in a registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.harness.registry import RUNS, Registry
from tests.fixtures.runs import SHA_A, SHA_B, fake_run


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "runs")


def _runs(registry: Registry, *argv: str) -> int:
    return main(["runs", *argv, "--registry", str(registry.root)])


def _err(capsys) -> str:
    """stderr with the paragraph's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def _failed_run(registry: Registry, run_id: str, status: str = "failed") -> str:
    registry.create(run_id, "global-clip", "synthetic-rs", "test", SHA_A, [0])
    registry.finish(run_id, {}, status=status)
    return run_id


# ------------------------------------------------------------------------------------------------ compare


def test_compare_prints_b_minus_a_per_direction_and_the_paired_test(registry, capsys):
    weak = fake_run(registry, "weak", 0.05, rng_offset=2)
    strong = fake_run(registry, "strong", 0.6, rng_offset=1)
    assert _runs(registry, "compare", weak, strong, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["a"], out["b"], out["fingerprint"]) == (weak, strong, SHA_A)
    assert list(out["metrics"]) == [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["mR"]
    summary = {run: json.loads((registry.run_dir(run) / "metrics.json").read_text())["summary"]
               for run in (weak, strong)}
    for metric, cell in out["metrics"].items():
        assert cell["a"] == summary[weak][metric]["mean"] and cell["b"] == summary[strong][metric]["mean"]
        assert cell["delta"] == round(cell["b"] - cell["a"], 2)
    mr = out["metrics"]["mR"]
    assert mr["delta"] > 0 and mr["p_value"] < 0.05 and 0 < mr["ci"][0] <= mr["delta"] <= mr["ci"][1]
    assert out["paired_test"] == {"n_boot": 1000, "skipped": None}

    assert _runs(registry, "compare", strong, weak) == 0
    text = capsys.readouterr().out
    assert f"A  {strong}" in text and f"B  {weak}" in text and "fingerprint aaaaaaaaaaaa" in text
    mr_line = next(line for line in text.splitlines() if line.startswith("mR "))
    assert f"{-mr['delta']:+.2f}" in mr_line and "paired sign-flip test" in text


def test_compare_of_two_repeats_is_not_separable(registry, capsys):
    first = fake_run(registry, "m", 0.5, rng_offset=3)
    repeat = fake_run(registry, "m", 0.5, rng_offset=3)
    assert _runs(registry, "compare", first, repeat, "--json", "--n-boot", "200") == 0
    mr = json.loads(capsys.readouterr().out)["metrics"]["mR"]
    assert mr["delta"] == 0 and mr["p_value"] == 1.0


def test_compare_refuses_runs_on_different_test_splits_naming_both_fingerprints(registry, capsys):
    a = fake_run(registry, "m", 0.5, sha=SHA_A)
    b = fake_run(registry, "n", 0.5, sha=SHA_B)
    assert _runs(registry, "compare", a, b) == 2
    err = _err(capsys)
    assert "different test splits" in err and "aaaaaaaaaaaa" in err and "bbbbbbbbbbbb" in err
    assert "Traceback" not in err


def test_compare_refuses_another_protocol(registry, capsys):
    a = fake_run(registry, "m", 0.5)
    b = fake_run(registry, "m", 0.5, protocol="string-dedup")
    assert _runs(registry, "compare", a, b) == 2
    assert "scored differently" in _err(capsys)


def test_compare_refuses_unfinished_runs_and_validation_trials(registry, capsys):
    finished = fake_run(registry, "m", 0.5)
    failed = _failed_run(registry, "a-failed-run")
    trial = fake_run(registry, "m", 0.5, role="val", tags={"study": "s", "trial": 0})
    assert _runs(registry, "compare", finished, failed) == 2
    assert "a-failed-run is failed, not finished" in _err(capsys)
    assert _runs(registry, "compare", trial, finished) == 2
    assert "validation split" in _err(capsys)


def test_compare_with_an_ambiguous_prefix_lists_the_candidates(registry, capsys):
    a = fake_run(registry, "m", 0.5)
    b = fake_run(registry, "n", 0.5)
    assert _runs(registry, "compare", a[:2], b) == 2
    err = _err(capsys)
    assert "ambiguous prefix" in err and a in err and b in err


def test_compare_without_per_query_hits_gives_the_deltas_and_says_why_no_test(registry, capsys):
    a = fake_run(registry, "m", 0.5, rng_offset=1)
    b = fake_run(registry, "n", 0.3, rng_offset=2)
    (registry.run_dir(b) / "seeds" / "0" / "ranks.npz").unlink()
    assert _runs(registry, "compare", a, b) == 0
    out = capsys.readouterr().out
    assert "no paired test: no per-query hits saved" in out and "mR" in out


# --------------------------------------------------------------------------------------------- rm --failed


def test_rm_failed_removes_every_failed_run_and_lists_them(registry, capsys):
    kept = fake_run(registry, "m", 0.5)
    failed = [_failed_run(registry, f"failed-{i}") for i in range(2)]
    interrupted = _failed_run(registry, "stopped", status="interrupted")
    assert _runs(registry, "rm", "--failed") == 0
    out = capsys.readouterr().out
    assert all(f"removed {run_id} (failed)" in out for run_id in failed) and interrupted not in out
    assert {r.id for r in registry.list()} == {kept, interrupted}
    assert not any(registry.run_dir(run_id).exists() for run_id in failed)

    assert _runs(registry, "rm", "--failed") == 0
    assert "no failed runs" in capsys.readouterr().out
    assert {r.id for r in registry.list()} == {kept, interrupted}


def test_rm_interrupted_covers_crashed_processes_and_never_a_running_run(registry, capsys):
    crashed = "crashed-run"
    registry.create(crashed, "global-clip", "synthetic-rs", "test", SHA_A, [0])
    with registry._connect() as db:  # the run's process is gone without marking it
        db.execute(RUNS.update().where(RUNS.c.id == crashed).values(pid=2**22 + 12345))
    running = "live-run"
    registry.create(running, "global-clip", "synthetic-rs", "test", SHA_A, [0])  # this process: alive
    failed = _failed_run(registry, "failed-run")
    assert _runs(registry, "rm", "--failed", "--interrupted") == 0
    out = capsys.readouterr().out
    assert f"removed {crashed} (interrupted)" in out and f"removed {failed} (failed)" in out
    assert [r.id for r in registry.list()] == [running]


def test_rm_refuses_a_state_flag_with_ids_and_an_empty_request(registry, capsys):
    failed = _failed_run(registry, "failed-run")
    assert _runs(registry, "rm", "--failed", failed) == 2
    assert "not both" in _err(capsys)
    assert _runs(registry, "rm") == 2
    assert "Nothing to remove" in _err(capsys)
    assert [r.id for r in registry.list()] == [failed]


# ------------------------------------------------------------------------------------------ fast --help


def test_building_the_parser_imports_no_deep_learning_library():
    """`--help` must not pay for torch (nor numpy, pydantic or tabulate): every heavy import waits for the command
    that needs it."""
    heavy = ('torch', 'open_clip', 'torchvision', 'transformers', 'numpy', 'pydantic', 'tabulate', 'sqlalchemy')
    code = ("import sys; from rsitr_bench.cli.main import build_parser; build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_list_help_names_every_plugin_kind_and_a_wrong_target_is_refused(capsys):
    from rsitr_bench.api import PLUGIN_KINDS
    from rsitr_bench.cli.lists import LIST_TARGETS
    from rsitr_bench.cli.main import LIST_HELP, main

    assert all(kind in LIST_HELP for kind in [*PLUGIN_KINDS, *LIST_TARGETS])
    assert main(["list", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and all(kind in err for kind in PLUGIN_KINDS)
