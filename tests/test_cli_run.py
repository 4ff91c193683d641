"""End to end: `rsitr-bench run` on the embedded dataset, the registry, caching, and user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from rsitr_bench.cli.main import main
from tests.helpers import home_registry, make_distribution, run_cli

SMALL = ["--set", "dataset.n_train=8", "--set", "dataset.n_val=4", "--set", "dataset.n_test=24"]


@pytest.mark.slow
def test_global_clip_run_records_and_reuses_cached_features(capsys):
    assert main(["run", "--method", "global-clip", "--no-progress", *SMALL]) == 0
    out = capsys.readouterr()
    assert "i2t_R@1" in out.out and "mR" in out.out and "protocol=instance" in out.out
    assert "ties=optimistic" in out.out and "normalization=none" in out.out and "95% CI" in out.out
    (row,) = home_registry().list()
    assert row.status == "finished" and row.method == "global-clip" and row.dataset == "synthetic-rs"
    run_dir = home_registry().run_dir(row.id)
    for name in ("config.yaml", "environment.json", "metrics.json", "run.log", "seeds/0/ranks.npz"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["unit"] == "percent" and metrics["protocol"] == "instance" and metrics["seeds"] == [0]
    assert metrics["fingerprints"]["test"]["images"] == 24
    assert metrics["parameters"]["trainable"] == 0 and metrics["parameters"]["total"] > 0
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["torch"] and {p["name"] for p in env["plugins"]} >= {"methods", "datasets"}
    assert "Encoded 24 images" in (run_dir / "run.log").read_text()

    assert main(["runs", "ls"]) == 0
    assert row.id in capsys.readouterr().out

    assert main(["run", "--method", "global-clip", "--no-progress", *SMALL]) == 0
    second = max(home_registry().list(), key=lambda r: r.created)
    log = (home_registry().run_dir(second.id) / "run.log").read_text()
    assert "Reusing cached image features" in log and "Reusing cached text features" in log
    again = json.loads((home_registry().run_dir(second.id) / "metrics.json").read_text())
    assert again["summary"] == metrics["summary"]

    assert main(["runs", "show", second.id]) == 0
    assert "i2t_R@1" in capsys.readouterr().out
    assert main(["runs", "rm", second.id]) == 0
    assert len(home_registry().list()) == 1


@pytest.mark.slow
def test_several_seeds_give_mean_std_and_n(capsys):
    assert main(["run", "--method", "global-clip", "--no-progress", "--seeds", "0,1", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "mean ± std (n=2)" in out and "seed 1" in out


def _err(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.slow
def test_user_errors_exit_2_with_one_paragraph(tmp_path, capsys):
    assert "Known methods:" in _err(["run", "--method", "nope"], capsys)
    assert "Known datasets:" in _err(["run", "--method", "global-clip", "--dataset", "nope"], capsys)
    assert "Cannot read config file" in _err(["run", "--config", str(tmp_path / "none.yaml")], capsys)
    assert "expects an integer" in _err(["run", "--method", "global-clip", "--set", "method.batch_size=x"], capsys)
    assert "does not exist" in _err(
        ["run", "--method", "global-clip", "--set", f"method.checkpoint={tmp_path}/nope.safetensors"], capsys)
    bad = tmp_path / "other.safetensors"
    save_file({"visual.other": torch.zeros(2)}, str(bad))
    err = _err(["run", "--method", "global-clip", "--no-progress", *SMALL, "--set", f"method.checkpoint={bad}"],
               capsys)
    assert "does not match the model" in err and "unexpected: visual.other" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "not writable" in _err(["run", "--method", "global-clip", "--registry", str(blocker / "runs")], capsys)
    assert "Traceback" not in capsys.readouterr().err


SLOW_METHOD = """
import os, time
from pathlib import Path
from rsitr_bench import hookimpl
from rsitr_bench.api import MethodSpec
from rsitr_bench.methods.global_clip import GlobalClip, GlobalClipOptions

class SlowOnSeed1(GlobalClip):
    def score(self, split, ctx):
        marker = Path(os.environ["SLOW_MARKER"])
        if ctx.seed == 1 and not marker.exists():
            marker.write_text("reached seed 1")
            time.sleep(120)
        return super().score(split, ctx)

@hookimpl
def rsitr_register_methods():
    return [MethodSpec(name="slow-clip", factory=SlowOnSeed1, options=GlobalClipOptions)]
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    site = make_distribution(tmp_path / "site", "slow-dist", "slow_plugin", SLOW_METHOD)
    marker = tmp_path / "marker"
    env = dict(os.environ, HF_HUB_OFFLINE="1", SLOW_MARKER=str(marker), PYTHONPATH=str(site))
    args = ["run", "--method", "slow-clip", "--seeds", "0,1,2", "--no-progress", *SMALL]
    proc = subprocess.Popen([sys.executable, "-m", "rsitr_bench", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(1500):  # poll for up to about five minutes
        if marker.exists():
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        pytest.fail("the run never reached seed 1")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row,) = home_registry().list()
    assert row.effective_status == "interrupted"
    run_dir = home_registry().run_dir(row.id)
    assert (run_dir / "seeds/0/metrics.json").is_file() and not (run_dir / "metrics.json").exists()

    resumed = run_cli("run", "--resume", row.id, extra_path=site, env={"SLOW_MARKER": str(marker)})
    assert resumed.returncode == 0, resumed.stderr
    assert "Seed 0 already finished" in resumed.stderr
    straight = run_cli(*args, extra_path=site, env={"SLOW_MARKER": str(marker)})
    assert straight.returncode == 0, straight.stderr
    rows = {r.id: r for r in home_registry().list()}
    other = next(r for r in rows if r != row.id)
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((home_registry().run_dir(other) / "metrics.json").read_text())
    assert rows[row.id].status == "finished"
    assert a["summary"] == b["summary"] and a["per_seed"] == b["per_seed"]


def test_resume_unknown_run(capsys):
    assert "No run 'nope'" in _err(["run", "--resume", "nope"], capsys)


@pytest.mark.parametrize("command", [["list"], ["list", "plugins"], ["list", "datasets"], ["runs", "ls"]])
def test_read_only_commands(command, capsys):
    assert main(command) == 0


@pytest.mark.slow
def test_global_clip_runs_on_real_ucm_annotations_with_placeholder_images(shared_data, tmp_path, capsys):
    """The README's UCM layout: dataset.json plus images/1.tif ... 2100.tif under --data-root."""
    from PIL import Image

    root = tmp_path / "UCM"
    (root / "images").mkdir(parents=True)
    (root / "dataset.json").write_bytes((shared_data / "ucm" / "karpathy_json" / "dataset.json").read_bytes())
    placeholder = Image.new("RGB", (16, 16), (90, 120, 60))
    for n in range(1, 2101):
        placeholder.save(root / "images" / f"{n}.tif")
    argv = ["run", "--method", "global-clip", "--dataset", "ucm", "--data-root", str(root), "--no-progress",
            "--set", "eval.bootstrap=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "global-clip on ucm/test (210 images, 1050 captions" in out
