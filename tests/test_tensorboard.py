"""``train.tensorboard=true``: per-epoch curves of a real training run, read back as TensorBoard reads them."""

from __future__ import annotations

import json
import sys

import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.errors import ConfigError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from tests.helpers import home_registry

TINY = ["--no-progress", "--set", "dataset.n_train=16", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8",
        "--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "eval.bootstrap=50"]


@pytest.mark.slow
def test_full_ft_writes_loss_lr_and_validation_metrics_per_epoch(capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["run", "--method", "full-ft", *TINY, "--set", "train.tensorboard=true"]) == 0
    capsys.readouterr()
    (row,) = home_registry().list()
    run_dir = home_registry().run_dir(row.id)
    history = json.loads((run_dir / "metrics.json").read_text())["per_seed"]["0"]["fit"]["train"]["history"]
    events = EventAccumulator(str(run_dir / "seeds" / "0" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    metrics = ["mR"] + [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert {"train/loss", "train/lr"} | {f"val/{m}" for m in metrics} <= tags, tags

    def curve(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert curve("train/loss") == [(h["epoch"], pytest.approx(h["loss"], rel=1e-6)) for h in history]
    assert curve("val/mR") == [(h["epoch"], pytest.approx(h["val"]["mR"], rel=1e-6)) for h in history]
    (first, lr1), (second, lr2) = curve("train/lr")
    assert (first, second) == (1, 2) and lr1 > lr2 > 0  # the linear decay after warm-up


def test_tensorboard_without_the_package_is_a_configuration_error_that_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an uninstalled package looks like
    host = build_plugin_host()
    with pytest.raises(ConfigError, match=r"train configuration.*pip install tensorboard"):
        resolve_config({"method": {"name": "full-ft"}, "train": {"tensorboard": True}}, host)
    assert resolve_config({"method": {"name": "full-ft"}, "train": {"tensorboard": False}}, host).train.tensorboard \
        is False
