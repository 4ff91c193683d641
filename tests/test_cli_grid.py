"""What CLIP_benchmark and lm-eval users expect of `run` / `eval`: model × dataset grids, --output, --limit and
--log-samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rsitr_bench.cli.main import main
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.reports.leaderboard import build_tables
from rsitr_bench.reports.runs import finished_test_runs
from tests.helpers import home_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--method", "global-clip", "--no-progress", "--set", "dataset.n_test=24", "--set", "eval.bootstrap=0"]


def _metrics(run_id: str) -> dict:
    return json.loads((home_registry().run_dir(run_id) / "metrics.json").read_text())


def _karpathy(root, n_images: int, seed: int) -> None:
    """A tiny Karpathy-format dataset (dataset.json + images/) with a test split of ``n_images``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images = []
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i + 1}.tif")
        images.append({"filename": f"{i + 1}.tif", "split": "test",
                       "sentences": [{"raw": f"scene {i} with {w} buildings"} for w in ("few", "many")]})
    (root / "dataset.json").write_text(json.dumps({"images": images, "dataset": root.name}))


@pytest.mark.slow
def test_run_grid_of_models_prints_one_table_and_writes_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "out" / "grid.json", tmp_path / "grid.md"
    assert main(["run", *TINY, "--model", "rsitr-tiny/synthetic-rs,rsitr-tiny", "--pretrained", "none",
                 "--output", str(out_json), "--output", str(out_md)]) == 0
    out = capsys.readouterr().out
    runs = {r.tag_dict["grid_model"]: r for r in home_registry().list()}
    assert set(runs) == {"rsitr-tiny/synthetic-rs", "rsitr-tiny"}
    assert not any(r.tag_dict.get("evaluation_only") for r in runs.values()), "run fits every cell"
    embedded, random_init = (_metrics(runs[m].id) for m in ("rsitr-tiny/synthetic-rs", "rsitr-tiny"))
    assert embedded["weights"]["sha256"] and random_init["weights"]["sha256"] is None, "--pretrained none"
    table = [line for line in out.splitlines() if line.startswith("rsitr-tiny")]
    assert len(table) == 2 and all(runs[line.split()[0]].id in line for line in table)
    assert "mR" in out and "i2t_R@1" in out and "compliant" in out
    written = json.loads(out_json.read_text())
    assert [(w["model"], w["run_id"]) for w in written] == [(m, runs[m].id) for m in ("rsitr-tiny/synthetic-rs",
                                                                                      "rsitr-tiny")]
    assert written[0]["result"] == embedded
    md = out_md.read_text().splitlines()
    assert md[0].startswith("| model") and len(md) == 4 and f"{embedded['summary']['mR']['mean']:.2f}" in md[2]


@pytest.mark.slow
def test_eval_grid_runs_every_model_on_every_dataset_of_data_dir(tmp_path, capsys):
    for name, seed in (("ucm", 0), ("sydney", 1)):
        _karpathy(tmp_path / "data" / name, 4, seed)
    assert main(["eval", "--method", "global-clip", "--no-progress", "--set", "eval.bootstrap=0", "--set",
                 "eval.ks=1,2", "--model", "rsitr-tiny/synthetic-rs,rsitr-tiny", "--pretrained", "none",
                 "--dataset", "ucm,sydney", "--data-dir", str(tmp_path / "data")]) == 0
    cells = {(r.tag_dict["grid_model"], r.dataset) for r in home_registry().list()}
    assert cells == {(m, d) for m in ("rsitr-tiny/synthetic-rs", "rsitr-tiny") for d in ("ucm", "sydney")}
    assert all(r.tag_dict["evaluation_only"] for r in home_registry().list())
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("rsitr-tiny")]
    assert rows == [["rsitr-tiny/synthetic-rs", "ucm"], ["rsitr-tiny", "ucm"],
                    ["rsitr-tiny/synthetic-rs", "sydney"], ["rsitr-tiny", "sydney"]]


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "ucm,sydney", "--data-root", "x"], "--data-dir"),
    (["--data-dir", "x"], "--dataset a,b"),
    (["--output", "result.txt"], ".json, .md"),
    (["--model", "remoteclip-vit-b-23"], "remoteclip-vit-b-32"),
])
def test_grid_and_output_mistakes_are_refused_before_anything_runs(argv, message, capsys):
    assert main(["run", *TINY, *argv]) == 2
    assert message in capsys.readouterr().err
    assert home_registry().list() == []


@pytest.mark.slow
def test_limit_scores_the_first_images_and_is_never_ranked(capsys):
    assert main(["run", *TINY]) == 0
    assert main(["run", *TINY, "--limit", "6"]) == 0
    assert "NON-COMPLIANT" in capsys.readouterr().out
    full, limited = sorted((_metrics(r.id) for r in home_registry().list()), key=lambda m: -m["fingerprints"]
                           ["test"]["images"])
    assert full["comparable"] is True and full["limit"] is None and full["compliance"]["compliant"]
    assert limited["comparable"] is False
    assert limited["limit"] == {"images": 6, "captions": 30, "of_split": "test", "of_images": 24, "of_captions": 120}
    assert any("--limit" in reason for reason in limited["compliance"]["reasons"])
    fp = limited["fingerprints"]["test"]
    assert fp["split"] == "test[:6]" and (fp["images"], fp["captions"]) == (6, 30)
    assert fp["sha256"] != full["fingerprints"]["test"]["sha256"], "a limited split is not the full split"
    row = next(r for r in home_registry().list() if r.id == limited["run_id"])
    assert row.split == "test[:6]"
    # Even grouped with the full run, the limited one is stamped and never ranked.
    records = finished_test_runs(home_registry(), "synthetic-rs")
    for record in records:
        record.result["fingerprints"]["test"]["sha256"] = "same"
    (table,) = build_tables(records, n_boot=0)
    assert [r.record.id for r in table.ranked] == [full["run_id"]]
    assert [r.record.id for r in table.unranked] == [limited["run_id"]] and "--limit" in table.unranked[0].stamp


@pytest.mark.slow
def test_log_samples_writes_each_querys_top10_and_first_positive_rank():
    assert main(["eval", *TINY, "--limit", "12", "--log-samples"]) == 0
    (row,) = home_registry().list()
    run_dir = home_registry().run_dir(row.id)
    lines = [json.loads(line) for line in (run_dir / "seeds" / "0" / "samples.jsonl").read_text().splitlines()]
    i2t = [s for s in lines if s["direction"] == "i2t"]
    t2i = [s for s in lines if s["direction"] == "t2i"]
    assert len(i2t) == 12 and len(t2i) == 60 and lines[:12] == i2t
    ranks = np.load(run_dir / "seeds" / "0" / "ranks.npz")
    assert [s["first_positive_rank"] for s in i2t] == (ranks["i2t_ranks"] - 1).astype(int).tolist()
    assert [s["first_positive_rank"] for s in t2i] == (ranks["t2i_ranks"] - 1).astype(int).tolist()
    split = _limited_test_split(row.id)
    for sample in lines:
        top = sample["top"]
        assert len(top) == 10 and all(a["score"] >= b["score"] for a, b in zip(top, top[1:]))
        first = next((i for i, item in enumerate(top) if item["positive"]), None)
        assert first == (sample["first_positive_rank"] if sample["first_positive_rank"] < 10 else None)
    for sample in i2t:
        index = sample["query"]["index"]
        assert sample["query"]["image"] == split.image_names[index]
        assert all(split.captions[t["caption"]] == t["text"] for t in sample["top"])
        assert all(t["positive"] == (split.caption_image[t["caption"]] == index) for t in sample["top"])
    assert "samples.jsonl" in (run_dir / "run.log").read_text()


def _limited_test_split(run_id: str):
    """The test split a run scored, rebuilt from its saved configuration (with its eval.limit)."""
    import yaml

    from rsitr_bench.harness.config import resolve_config
    from rsitr_bench.harness.splits import load_splits

    host = build_plugin_host()
    config = resolve_config(yaml.safe_load((home_registry().run_dir(run_id) / "config.yaml").read_text()), host)
    return load_splits(config, host, trainable=False)["test"]
