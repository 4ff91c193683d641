"""``prepare`` (shards, resume) and the ``prepare`` / ``show-perspectives`` commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from rsitr_bench.cli.guidance import add_guidance_commands, run_guidance_command
from rsitr_bench.errors import UserError
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.prepare import PreparePlan, Shard, prepare
from rsitr_bench.perspectives.saliency import ClipSaliencyGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROLES = ["train", "val", "test"]


def _entries(cache: Path) -> dict[str, str]:
    return {p.name: p.read_text() for kind in ("keywords", "perspectives")
            for p in (cache / kind).rglob("*.json")}


def test_shard_parsing_and_partition():
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(UserError):
            Shard.parse(bad)
    parts = [Shard(i, 3).indices(10) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]


def test_two_shards_fill_exactly_what_a_full_run_fills(make_service, backbone_fn, tmp_path):
    plan = PreparePlan()
    for shard in (Shard(0, 2), Shard(1, 2)):  # a fresh service per shard, as in two processes
        prepare(make_service(cache=tmp_path / "sharded"), ROLES, plan, backbone_fn, shard)
    full = prepare(make_service(cache=tmp_path / "full"), ROLES, plan, backbone_fn)
    assert _entries(tmp_path / "sharded") == _entries(tmp_path / "full")
    assert sum(r.stats["generator_calls"] for r in full.values()) > 0
    again = prepare(make_service(cache=tmp_path / "sharded"), ROLES, plan, backbone_fn)
    assert sum(r.stats["generator_calls"] for r in again.values()) == 0


def test_interrupted_prepare_resumes_without_redoing_finished_images(make_service, corpus, backbone_fn,
                                                                     tmp_path, monkeypatch):
    calls: list[int] = []
    real = ClipSaliencyGenerator.generate

    def flaky(self, item, keywords):
        if len(calls) == 5 and not resumed:
            raise KeyboardInterrupt
        calls.append(item.index)
        return real(self, item, keywords)

    monkeypatch.setattr(ClipSaliencyGenerator, "generate", flaky)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        prepare(make_service(), ROLES, PreparePlan(), backbone_fn)
    assert len(calls) == 5
    resumed = True
    results = prepare(make_service(), ROLES, PreparePlan(), backbone_fn)
    total = sum(split.n_images for split in corpus.values())
    assert len(calls) == total  # the 5 finished images were not computed again
    assert sum(r.stats["perspective_cache_hits"] for r in results.values()) == 5


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rsitr-bench")
    add_guidance_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def _common(tmp_path: Path) -> list[str]:
    return ["--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--set", "dataset.n_train=6", "--set", "dataset.n_val=2", "--set", "dataset.n_test=3"]


@pytest.mark.slow
def test_prepare_command_audits_the_gallery_side(guidance_host, tmp_path, capsys):
    assert run_guidance_command(_cli("prepare", *_common(tmp_path)), guidance_host) == 0
    out = capsys.readouterr().out
    assert "leakage_audit: pass" in out and "vocabulary" in out
    args = _cli("prepare", *_common(tmp_path), "--gallery-keywords", "rules", "--splits", "test", "--json")
    assert run_guidance_command(args, guidance_host) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["leakage_audit"]["status"] == "fail"
    assert report["splits"]["test"]["stats"]["refused_caption_reads"] == 3
    args = _cli("prepare", *_common(tmp_path), "--gallery-keywords", "rules", "--splits", "test",
                "--as-published", "--shard", "0/2")
    assert run_guidance_command(args, guidance_host) == 0
    assert "leakage_audit: fail (as published)" in capsys.readouterr().out


def test_show_perspectives_writes_a_png_and_masks(guidance_host, tmp_path, capsys):
    out = tmp_path / "view.png"
    args = _cli("show-perspectives", *_common(tmp_path), "--image", "test_00001.png", "--out", str(out),
                "--export-masks", str(tmp_path / "masks"))
    assert run_guidance_command(args, guidance_host) == 0
    printed = capsys.readouterr().out
    assert "keywords (vocabulary):" in printed and f"wrote {out}" in printed
    assert Image.open(out).width > 384
    assert len(list((tmp_path / "masks").glob("test_00001_*.png"))) >= 1
    with pytest.raises(UserError, match="No image"):
        run_guidance_command(_cli("show-perspectives", *_common(tmp_path), "--image", "nope.png"),
                             guidance_host)
    with pytest.raises(UserError, match="SECTION"):
        run_guidance_command(_cli("prepare", *_common(tmp_path), "--set", "method.lr=1"), guidance_host)


def test_prepare_refuses_gallery_reads_through_the_service(make_service, backbone_fn):
    audit = LeakageAudit()
    plan = PreparePlan(gallery_keywords="rules")
    results = prepare(make_service(audit), ["val"], plan, backbone_fn)
    assert results["val"].stats["refused_caption_reads"] == results["val"].stats["items"]
    assert audit.stamp()["status"] == "fail"
