"""User-facing defects found by trying a fresh clone as a new user would, each pinned by a test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from rsitr_bench import hookimpl
from rsitr_bench.api import DatasetSpec
from rsitr_bench.cli.main import main
from rsitr_bench.datasets.synthetic import SyntheticOptions, make_dataset
from rsitr_bench.errors import ConfigError, UserError
from rsitr_bench.harness.atomic import write_json_atomic, write_text_atomic
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.metrics import aggregate_seeds
from rsitr_bench.reports.table import recall_table
from rsitr_bench.training.engine import Engine, TrainConfig, prune_checkpoints
from tests.fixtures.mpsclip_models import run_context
from tests.helpers import home_registry

SMALL = ["--no-progress", "--set", "dataset.n_train=8", "--set", "dataset.n_val=4", "--set", "dataset.n_test=24"]


def _err(capsys) -> str:
    """stderr with the paragraph's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def _fake_runs(root: Path, ids: list[str], method: str = "global-clip") -> Registry:
    registry = Registry(root)
    for run_id in ids:
        registry.create(run_id, method, "synthetic-rs", "test", "0" * 64, [0])
    return registry


# ------------------------------------------------------------------------------------ 1. --device


DEVICES = ["gpu", "cuda:64", pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                            reason="this machine has a GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_unavailable_device_is_one_paragraph_and_records_no_run(device, capsys):
    assert main(["run", "--method", "global-clip", "--device", device, *SMALL]) == 2
    err = _err(capsys)
    assert f"Device '{device}' is not available here" in err and "Devices on this machine: auto, cpu" in err
    assert "Pass --device" in err and "Traceback" not in err
    assert home_registry().list() == []


# ---------------------------------------------------------------------------- 2. training option ranges


@pytest.mark.parametrize("option,message", [
    ("epochs=-1", "epochs=-1: a training run needs at least 1 epoch"),
    ("epochs=0", "epochs=0: .*to score a method without training it, use `rsitr-bench eval`"),
    ("lr=0", "lr=0.0: must be positive"),
    ("lr=-4e-5", "lr=-4e-05: must be positive"),
    ("batch_size=0", "batch_size=0: must be at least 1"),
    ("micro_batch_size=0", "micro_batch_size=0"),
    ("warmup=-0.1", "warmup=-0.1"),
    ("warmup=2", "warmup=2.0"),
    ("weight_decay=-1", "weight_decay=-1.0"),
    ("grad_clip=0", "grad_clip=0.0"),
    ("checkpoint_every=-1", "checkpoint_every=-1"),
    ("keep_checkpoints=all", "keep_checkpoints='all'"),
])
@pytest.mark.parametrize("method", ["full-ft", "mps-clip"])
def test_out_of_range_training_options_are_rejected_naming_the_key(method, option, message):
    key, _, value = option.partition("=")
    with pytest.raises(ConfigError, match=f"Invalid train configuration: {message}"):
        resolve_config({"method": method, "train": {key: value}}, build_plugin_host())


def test_zero_epoch_run_is_refused_before_anything_is_recorded(capsys):
    assert main(["run", "--method", "full-ft", *SMALL, "--set", "train.epochs=-1"]) == 2
    assert "train configuration: epochs=-1" in _err(capsys)
    assert home_registry().list() == []


def test_engine_checks_the_ranges_of_a_config_built_in_code(tmp_path):
    with pytest.raises(ConfigError, match="epochs=0"):
        Engine(TrainConfig(epochs=0, device="cpu"), run_context(tmp_path))


# ------------------------------------------------------------------------------- 3. | head (BrokenPipe)


def _pipe_into_head(tmp_path: Path, *args: str) -> tuple[str, str]:
    err = tmp_path / "stderr.txt"
    command = f"'{sys.executable}' -m rsitr_bench {' '.join(args)} 2>'{err}' | head -1"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return out.stdout, err.read_text()


@pytest.mark.slow  # a fresh interpreter imports torch
def test_runs_ls_piped_into_head_stops_quietly(tmp_path):
    # Far more than a pipe holds (64 KiB), so the writer still writes after head has gone.
    root = _fake_runs(tmp_path / "runs", [f"run-{i:03d}" for i in range(40)], method="m" * 4000).root
    out, err = _pipe_into_head(tmp_path, "runs", "ls", "--registry", str(root))
    assert len(out.splitlines()) == 1 and out.split()[0] == "run"
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.slow  # a fresh interpreter imports torch
def test_runs_show_json_piped_into_head_stops_quietly(tmp_path):
    registry = _fake_runs(tmp_path / "runs", ["big-run"])
    write_json_atomic(registry.run_dir("big-run") / "metrics.json", {"filler": ["x" * 100] * 5000})
    out, err = _pipe_into_head(tmp_path, "runs", "show", "big-run", "--json", "--registry", str(registry.root))
    assert out == "{\n"
    assert "Traceback" not in err and "BrokenPipe" not in err


# ------------------------------------------------------------------------ 4. --registry in either place


@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_registry_option_is_honoured_before_and_after_the_sub_command(where, tmp_path, capsys):
    root = _fake_runs(tmp_path / "elsewhere", ["the-run-elsewhere"]).root
    option = ["--registry", str(root)]
    argv = {"before": [*option, "runs", "ls"], "between": ["runs", *option, "ls"],
            "after": ["runs", "ls", *option]}[where]
    assert main(argv) == 0
    assert "the-run-elsewhere" in capsys.readouterr().out


# -------------------------------------------------------------------------------- 5. ambiguous prefix


def test_ambiguous_run_id_prefix_lists_the_candidates(tmp_path, capsys):
    registry = _fake_runs(tmp_path / "runs", ["20250101-a-1", "20250101-a-2", "20250102-b-1"])
    with pytest.raises(UserError, match="'20250101' is an ambiguous prefix: 20250101-a-1, 20250101-a-2"):
        registry.get("20250101")
    assert registry.get("20250102").id == "20250102-b-1"
    assert main(["runs", "show", "20250101-a", "--registry", str(registry.root)]) == 2
    assert "ambiguous prefix: 20250101-a-1, 20250101-a-2" in _err(capsys)


def test_run_id_prefix_is_not_a_like_pattern(tmp_path):
    registry = _fake_runs(tmp_path / "runs", ["run-a1"])
    with pytest.raises(UserError, match="No run 'run_'"):
        registry.get("run_")


# ----------------------------------------------------------------------- 6. read-only commands create nothing


def test_read_only_commands_never_create_a_registry(tmp_path, capsys):
    missing = tmp_path / "no" / "registry"
    assert main(["runs", "ls", "--registry", str(missing)]) == 0
    assert f"no runs in {missing}" in capsys.readouterr().out
    for argv in (["runs", "show", "some-run"], ["runs", "rm", "some-run"], ["report", "--format", "md"]):
        assert main([*argv, "--registry", str(missing)]) == 2
        assert f"There is no run registry at {missing}" in _err(capsys)
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------------- 8. umask, not 0600


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.md", "# report\n")
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.md", "# private\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.md").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.md", "report.md"]  # no temporary left


# -------------------------------------------------------------------------------- 9. runs ls decimals


def test_runs_ls_prints_two_decimals_without_a_spread(tmp_path, capsys):
    registry = _fake_runs(tmp_path / "runs", ["one-seed"])
    registry.finish("one-seed", {"summary": {"mR": {"mean": 47.9, "std": 0.0, "n": 1}}})
    assert main(["runs", "ls", "--registry", str(registry.root)]) == 0
    assert "47.90" in capsys.readouterr().out


# --------------------------------------------------------- 7 and 10: a zero-shot run on a rootless dataset


@hookimpl
def rsitr_register_datasets():
    """A dataset that, like one generated in memory, never reads the data root it is given."""
    return [DatasetSpec(name="rootless-rs", factory=lambda root, options: make_dataset(None, options),
                        options=SyntheticOptions, uses_data_root=False)]


@pytest.fixture(scope="module")
def rootless_run(tmp_path_factory):
    """global-clip, seeds 0 and 1, on 8 test images (R@10 covers the whole image gallery), --data-root given."""
    from rsitr_bench.harness import runner

    base = tmp_path_factory.mktemp("rootless")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSITR_BENCH_HOME", str(base / "home"))
        mp.setenv("RSITR_BENCH_CACHE", str(base / "cache"))
        host = build_plugin_host(extra_plugins=[("rootless", types.SimpleNamespace(
            rsitr_register_datasets=rsitr_register_datasets))])
        config = resolve_config({
            "method": "global-clip", "dataset": {"name": "rootless-rs", "n_train": 8, "n_val": 4, "n_test": 8},
            "data": {"root": str(base / "my-data")}, "run": {"seeds": [0, 1], "progress": False},
            "eval": {"bootstrap": 50}}, host)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            outcome = runner.execute(config, host, Registry(base / "runs"))
    return outcome, stderr.getvalue()


def test_an_ignored_data_root_is_warned_about_on_stderr_and_in_the_log(rootless_run):
    outcome, stderr = rootless_run
    warning = "dataset rootless-rs does not read a data root: data.root (--data-root)"
    assert stderr.count(warning) == 1
    assert (outcome.run_dir / "run.log").read_text().count(warning) == 1


def test_datasets_read_their_data_root_unless_they_declare_otherwise():
    assert build_plugin_host().get("datasets", "synthetic-rs").spec.uses_data_root


def test_k_not_below_the_gallery_size_is_warned_once_and_recorded(rootless_run):
    outcome, stderr = rootless_run
    expected = {"t2i": {"gallery": 8, "ks": [10]}}
    assert outcome.metrics["saturated_ks"] == expected
    assert all(outcome.metrics["per_seed"][s]["saturated_ks"] == expected for s in ("0", "1"))
    log = (outcome.run_dir / "run.log").read_text()
    assert log.count("100 % by construction") == 1 and "t2i R@10 over 8 candidates" in log
    assert stderr.count("100 % by construction") == 1
    assert "t2i R@10: k is not smaller than the gallery (8 candidates)" in recall_table(outcome.metrics)


def test_zero_shot_run_over_several_seeds_says_the_spread_is_expected(rootless_run):
    table = recall_table(rootless_run[0].metrics)
    assert "± 0.00" in table and "deterministic method: seeds do not change the result" in table


# ---------------------------------------------------------------- 11, 12, 13: the recall table's notes


COLS = ["i2t_R@1", "t2i_R@1", "mR"]


def _result(per_seed: dict[int, dict[str, float]], fits: dict[int, dict] | None = None) -> dict:
    """A metrics.json as the runner writes it, for R@1 only."""
    records = {str(s): {"metrics": m, "tied_queries": {"i2t": 0, "t2i": 0}, "fit": (fits or {}).get(s, {}),
                        "ci95": {c: [m[c] - 1, m[c] + 1] for c in COLS}} for s, m in per_seed.items()}
    return {"method": "m", "dataset": "d", "split": "test", "split_role": "test", "ks": [1],
            "seeds": list(per_seed), "per_seed": records, "summary": aggregate_seeds(list(per_seed.values())),
            "fingerprints": {"test": {"images": 8, "captions": 40, "sha256": "0" * 64}}, "protocol": "instance",
            "ties": "optimistic", "text_normalization": "none", "prompt_prefix": "", "selection": "val",
            "parameters": {}, "leakage_audit": {"status": "pass"}, "compliance": {"compliant": True, "reasons": []}}


def _metrics(i2t: float, t2i: float) -> dict[str, float]:
    return {"i2t_R@1": i2t, "t2i_R@1": t2i, "mR": (i2t + t2i) / 2}


def _fit(best_epoch: int, epochs: int, score: float) -> dict:
    return {"selection": "val", "best_epoch": best_epoch,
            "train": {"epochs": epochs, "best_score": score, "select_metric": "mR"}}


def test_table_prints_the_selected_epoch_of_a_trained_run():
    table = recall_table(_result({0: _metrics(40, 50)}, {0: _fit(3, 5, 47.123)}))
    assert "selected epoch 3 of 5 on validation mR 47.12" in table


def test_table_prints_the_selected_epoch_of_every_seed():
    table = recall_table(_result({0: _metrics(40, 50), 1: _metrics(42, 50)},
                                 {0: _fit(2, 4, 45.0), 1: _fit(4, 4, 46.5)}))
    assert "seed 0: selected epoch 2 of 4 on validation mR 45.00" in table
    assert "seed 1: selected epoch 4 of 4 on validation mR 46.50" in table
    assert "deterministic method" not in table


def test_table_of_a_zero_shot_run_has_no_selected_epoch():
    assert "selected epoch" not in recall_table(_result({0: _metrics(40, 50)}, {0: {"selection": "none"}}))


def test_identical_seeds_are_explained():
    table = recall_table(_result({0: _metrics(40, 50), 1: _metrics(40, 50), 2: _metrics(40, 50)}))
    assert "40.00 ± 0.00" in table and "deterministic method: seeds do not change the result" in table


def test_multi_seed_table_shows_every_seeds_interval_and_says_so():
    table = recall_table(_result({0: _metrics(40, 50), 1: _metrics(44, 50)}))
    assert "95% CI (seed 0)" in table and "95% CI (seed 1)" in table
    assert "[43.00, 45.00]" in table
    assert "one interval per seed (not pooled)" in table


# --------------------------------------------------------------------------- 15. keep_checkpoints


def _checkpoints(run_dir: Path) -> None:
    for name in ("best", "last"):
        (run_dir / "checkpoints" / name).mkdir(parents=True)
        (run_dir / "checkpoints" / name / "model.safetensors").write_bytes(b"weights")


@pytest.mark.parametrize("keep,left", [("best", ["best"]), ("last", ["last"]), ("none", [])])
def test_prune_checkpoints_keeps_what_was_asked(keep, left, tmp_path):
    _checkpoints(tmp_path)
    prune_checkpoints(tmp_path, keep)
    folder = tmp_path / "checkpoints"
    assert (sorted(p.name for p in folder.iterdir()) if folder.exists() else []) == left


@pytest.mark.slow
def test_finished_seed_keeps_only_the_best_checkpoint_and_prints_its_epoch(capsys):
    argv = ["run", "--method", "full-ft", "--no-progress", "--set", "dataset.n_train=16", "--set", "dataset.n_val=8",
            "--set", "dataset.n_test=8", "--set", "train.epochs=2", "--set", "train.batch_size=16",
            "--set", "eval.bootstrap=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (row,) = home_registry().list()
    seed = json.loads((home_registry().run_dir(row.id) / "metrics.json").read_text())["per_seed"]["0"]
    score = seed["fit"]["train"]["best_score"]
    assert f"selected epoch {seed['fit']['best_epoch']} of 2 on validation mR {score:.2f}" in out
    checkpoints = home_registry().run_dir(row.id) / "seeds" / "0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best"]
