"""full-ft and mps-clip through the harness: validation-selected, test-once results with stamps."""

from __future__ import annotations

import json

import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.errors import ConfigError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from tests.helpers import home_registry

TINY = ["--no-progress", "--set", "dataset.n_train=16", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8",
        "--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "eval.bootstrap=50"]


def _result(capsys) -> dict:
    capsys.readouterr()
    (row,) = home_registry().list()
    return json.loads((home_registry().run_dir(row.id) / "metrics.json").read_text())


@pytest.mark.slow
def test_full_ft_selects_on_validation(capsys):
    assert main(["run", "--method", "full-ft", *TINY]) == 0
    result = _result(capsys)
    seed = result["per_seed"]["0"]
    assert result["selection"] == "val" and result["compliance"]["compliant"]
    assert seed["fit"]["best_epoch"] in (1, 2) and len(seed["fit"]["train"]["history"]) == 2
    assert all("val" in h for h in seed["fit"]["train"]["history"])
    assert seed["parameters"]["trainable"] == seed["parameters"]["total"] > 0


@pytest.mark.slow
def test_mps_clip_is_leak_free_and_reports_parameters(capsys):
    assert main(["run", "--method", "mps-clip", *TINY, "--set", "method.max_perspectives=2"]) == 0
    result = _result(capsys)
    seed = result["per_seed"]["0"]
    assert result["leakage_audit"]["status"] == "pass" and result["compliance"]["compliant"]
    assert result["selection"] == "val"
    params = seed["parameters"]
    assert 0 < params["trainable"] < params["total"]
    guidance = seed["fit"]["guidance_train"]
    assert guidance["keywords"] == "rules" and guidance["config"]["perspectives"]["name"] == "dense-clip"
    assert seed["guidance_stats"]["items"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method", [["mps-clip-leaky-protocol"],
                                    ["mps-clip", "--set", "method.gallery_protocol=as-published"]])
def test_the_published_gallery_protocol_is_stamped_non_compliant(capsys, method):
    assert main(["run", "--method", *method, *TINY, "--set", "method.max_perspectives=2"]) == 0
    out = capsys.readouterr().out
    assert "leakage_audit: fail (as published)" in out and "NON-COMPLIANT" in out
    (row,) = home_registry().list()
    result = json.loads((home_registry().run_dir(row.id) / "metrics.json").read_text())
    assert result["leakage_audit"]["status"] == "fail (as published)"
    assert not result["compliance"]["compliant"] and row.compliant == 0


@pytest.mark.parametrize("override,message", [
    ({"mpr_heads": 0}, "mpr_heads"),
    ({"max_perspectives": 0}, "max_perspectives"),
    ({"bottleneck": 30, "adapter_heads": 4}, "multiple of adapter_heads"),
])
def test_nonsensical_mps_clip_configs_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config({"method": {"name": "mps-clip", **override}}, build_plugin_host())


@pytest.mark.slow
def test_uncapped_perspectives_reach_the_guidance_service(capsys):
    assert main(["run", "--method", "mps-clip", *TINY, "--set", "method.max_perspectives=null"]) == 0
    seed = _result(capsys)["per_seed"]["0"]
    assert seed["fit"]["guidance_train"]["config"]["max_per_image"] is None


@pytest.mark.slow
def test_uncapped_perspectives_are_checked_against_the_step_once_known(capsys, monkeypatch):
    from rsitr_bench.methods.mps_clip import method

    # Any image with two sub-images makes a 16-sample step exceed 16.
    monkeypatch.setattr(method, "MAX_SUBIMAGES_PER_STEP", 16)
    assert main(["run", "--method", "mps-clip", *TINY, "--set", "method.max_perspectives=null"]) == 2
    assert "uncapped max_perspectives: up to" in capsys.readouterr().err


@pytest.mark.slow
def test_too_many_perspectives_for_the_batch_is_rejected(capsys):
    assert main(["run", "--method", "mps-clip", "--set", "method.max_perspectives=100",
                 "--set", "train.batch_size=128"]) == 2
    assert "sub-images per step" in capsys.readouterr().err
