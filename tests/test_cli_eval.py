"""`rsitr-bench eval`: scoring without training, recorded as an ordinary, rankable run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import save_file

from rsitr_bench.cli.main import main
from rsitr_bench.clip.backbones import _CONFIG_DIR, build_backbone
from rsitr_bench.harness.evaluation import load_eval_presets
from rsitr_bench.harness.registry import Registry

SMALL = ["--set", "dataset.n_train=8", "--set", "dataset.n_val=4", "--set", "dataset.n_test=24"]


def _registry() -> Registry:
    return Registry(Path(os.environ["RSITR_BENCH_HOME"]) / "runs")


def _metrics(run_id: str) -> dict:
    return json.loads((_registry().run_dir(run_id) / "metrics.json").read_text())


def test_eval_scores_a_trainable_method_without_training_or_loading_train(capsys):
    assert main(["eval", "--method", "full-ft", "--no-progress", *SMALL]) == 0
    (row,) = _registry().list()
    assert row.status == "finished" and row.tag_dict == {"evaluation_only": True}
    metrics = _metrics(row.id)
    assert metrics["evaluation_only"] is True
    assert metrics["selection"] == "none (evaluation only)" and metrics["compliance"]["compliant"]
    assert set(metrics["fingerprints"]) == {"test"}, "eval must not load train or val"
    log = (_registry().run_dir(row.id) / "run.log").read_text()
    assert "Evaluation only" in log and "epoch" not in log.lower()
    assert not list(_registry().run_dir(row.id).glob("seeds/0/*.safetensors")), "nothing was trained or saved"
    assert "recorded as run" in capsys.readouterr().out


def test_eval_records_weights_provenance():
    assert main(["eval", "--method", "global-clip", "--no-progress", *SMALL]) == 0
    (row,) = _registry().list()
    weights = _metrics(row.id)["weights"]
    assert weights["sha256"] and len(weights["sha256"]) == 64
    assert weights["source"].endswith("rsitr-tiny-synthetic-rs.safetensors")


def test_eval_without_method_or_preset_is_a_user_error(capsys):
    assert main(["eval", "--no-progress"]) == 2
    assert "--method" in capsys.readouterr().err
    assert _registry().list() == []


def test_unknown_eval_preset_lists_the_known_ones(capsys):
    assert main(["eval", "--preset", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert "mps-clip-released-rsitmd" in err and "mps-clip-released-rsicd" in err


def test_shipped_eval_presets_name_catalog_checkpoints_and_registered_methods():
    from rsitr_bench.checkpoints import get_entry
    from rsitr_bench.harness.plugins import build_plugin_host

    host = build_plugin_host()
    presets = load_eval_presets()
    assert {"mps-clip-released-rsitmd", "mps-clip-released-rsicd"} <= set(presets)
    for preset in presets.values():
        get_entry(preset.checkpoint)
        labels = [row.label for row in preset.rows]
        assert any("as published" in label for label in labels) and any("compliant" in label for label in labels)
        for row in preset.rows:
            host.get("methods", row.method)
            # The leaky row asks for the published protocol through its one switch; the compliant row does not.
            published = row.overrides.get("method.gallery_protocol") == "as-published"
            assert published is ("as published" in row.label)


@pytest.mark.parametrize("text", ["rows: 3", "description: x"])
def test_malformed_eval_preset_file_names_the_preset(tmp_path, text):
    from rsitr_bench.errors import ConfigError

    path = tmp_path / "presets.yaml"
    path.write_text("broken:\n  " + text + "\n")
    with pytest.raises(ConfigError, match="broken"):
        load_eval_presets(path)


@pytest.mark.slow
def test_leaderboard_scores_every_model_on_every_dataset_and_writes_one_report(hf_hub, tmp_path, capsys):
    weights = tmp_path / "open_clip_model.safetensors"
    state = build_backbone("rsitr-tiny", pretrained=None, init_seed=5).model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = {"model_cfg": json.loads((_CONFIG_DIR / "rsitr-tiny.json").read_text()), "preprocess_cfg": {}}
    hf_hub.add_file("acme/tiny-clip", "open_clip_config.json", json.dumps(config).encode())
    digest = hf_hub.add_file("acme/tiny-clip", "open_clip_model.safetensors", weights)

    out_dir = tmp_path / "board"
    assert main(["leaderboard", "--models", "rsitr-tiny/synthetic-rs,hf-hub:acme/tiny-clip",
                 "--datasets", "synthetic-rs", "--no-progress", "--out", str(out_dir),
                 "--set", "dataset.n_test=24"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith(("rsitr-tiny", "hf-hub"))]
    assert rows == [["rsitr-tiny/synthetic-rs", "synthetic-rs"], ["hf-hub:acme/tiny-clip", "synthetic-rs"]]
    runs = _registry().list()
    assert len(runs) == 2 and all(r.tag_dict["evaluation_only"] for r in runs)
    by_model = {r.tag_dict["grid_model"]: _metrics(r.id) for r in runs}
    assert by_model["hf-hub:acme/tiny-clip"]["weights"]["sha256"] == digest
    assert by_model["rsitr-tiny/synthetic-rs"]["weights"]["sha256"] != digest
    report = (out_dir / "report.md").read_text()
    assert "global-clip" in report and report.count("synthetic-rs") >= 1


def test_leaderboard_refuses_an_unknown_model_before_running_anything(capsys):
    assert main(["leaderboard", "--models", "remoteclip-vit-b-23", "--datasets", "synthetic-rs"]) == 2
    err = capsys.readouterr().err
    assert "remoteclip-vit-b-32" in err
    assert _registry().list() == []
