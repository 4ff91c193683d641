"""Localisation against ground truth (``eval-perspectives``) and the ``oracle-boxes`` upper bound.

The ground truth is synthetic-rs's declared object boxes (``Split.object_boxes``). The scoring is checked on
hand-made perspectives whose IoU is known; the command end to end on ``oracle-boxes`` (IoU 1 by construction)
and ``grid`` (fixed cells: far from the objects). Only a generator that declares ``deployable=False`` is handed
the boxes, and a run that uses it is stamped non-compliant with the oracle reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import rsitr_bench.keywords
import rsitr_bench.perspectives
from rsitr_bench.api import GroundTruthRefused, GuidanceResult, ItemContext, ObjectBox, PerspectiveGeneratorSpec
from rsitr_bench.cli.main import main
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.context import LeakageAudit, Perspective, item_contexts
from rsitr_bench.guidance.localisation import box_iou, measure_localisation, score_localisation
from rsitr_bench.guidance.prepare import PreparePlan
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.runner import ORACLE_REASON
from rsitr_bench.hookspecs import hookimpl
from rsitr_bench.perspectives.oracle import OracleBoxesGenerator, OracleOptions
from tests.helpers import home_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # end-exclusive: touching boxes share no pixel
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_synthetic_rs_declares_its_object_boxes_and_a_limit_keeps_them(corpus):
    from rsitr_bench.harness.splits import limit_split

    val = corpus["val"]
    assert len(val.object_boxes) == val.n_images
    assert [(o.label, list(o.box)) for o in val.object_boxes[0]] == \
        [(o["label"], o["box"]) for o in val.annotations["objects"][0]]
    assert limit_split(val, 2).object_boxes == val.object_boxes[:2]


def _image_with_two_of_a_class(split):
    for index, objects in enumerate(split.object_boxes):
        labels = [o.label for o in objects]
        for label in labels:
            if labels.count(label) >= 2:
                return index, label
    raise AssertionError("the corpus has no image with two objects of one class")


def _result(split, keywords, perspectives, guided=True, indices=None) -> GuidanceResult:
    indices = list(range(len(keywords))) if indices is None else indices
    return GuidanceResult(split.name, "val", "gallery", indices, keywords, perspectives, {},
                          {"keywords": {"name": "hand"}, "perspectives": {"name": "hand"},
                           "keyword_guided": guided})


def test_each_keyword_is_scored_against_its_best_matching_object(corpus):
    split = corpus["train"]
    index, label = _image_with_two_of_a_class(split)
    first, second = [o.box for o in split.object_boxes[index] if o.label == label][:2]
    absent = next(k for k in ("ship", "plane", "bridge", "tree")
                  if k not in {o.label for o in split.object_boxes[index]})
    # the box is the second object's, shifted right by half its width: IoU 1/3 with it, less with the first
    shifted = (second[0] + (second[2] - second[0]) // 2, second[1], second[2] + (second[2] - second[0]) // 2,
               second[3])
    whole = (0, 0, 128, 128)
    perspectives = [[Perspective(label, shifted), Perspective(absent, whole)]]
    report = score_localisation(split, _result(split, [[label, absent]], perspectives, indices=[index]))
    (match,) = report.matches
    assert match.keyword == label and match.truth == second and match.box == shifted
    assert match.objects >= 2
    assert match.iou == pytest.approx(box_iou(shifted, second)) and match.iou > box_iou(shifted, first)
    summary = report.summary()
    assert summary["keywords_scored"] == 1 and summary["keywords_without_object"] == 1  # absent: not scored
    assert summary["hit_rate"] == (1.0 if match.iou >= 0.5 else 0.0)
    assert summary["large_box_fraction"] == 0.5  # the whole-image box of the absent keyword
    assert report.per_keyword() == {label: {"n": 1, "mean_iou": match.iou, "hit_rate": summary["hit_rate"]}}


def test_a_keyword_without_a_box_scores_zero_and_keyword_free_boxes_compete(corpus):
    split = corpus["val"]
    label = split.object_boxes[0][0].label
    truth = split.object_boxes[0][0].box
    missed = score_localisation(split, _result(split, [[label]], [[]]))
    assert missed.matches[0].iou == 0.0 and missed.summary()["keywords_without_box"] == 1
    cells = [Perspective("", (0, 0, 1, 1)), Perspective("", truth)]
    free = score_localisation(split, _result(split, [[label]], [cells], guided=False))
    assert free.matches[0].iou == 1.0 and free.summary()["boxes_per_image"] == 2


def test_a_dataset_without_boxes_is_a_clear_error(guidance_host, corpus, backbone_fn, tmp_path):
    roles = {role: dataclasses.replace(split, object_boxes=None) for role, split in corpus.items()}
    service = GuidanceService(guidance_host, roles, LeakageAudit(), tmp_path, progress=False)
    with pytest.raises(DataError, match="declares no ground-truth object boxes"):
        measure_localisation(service, "val", PreparePlan(generator="grid"), backbone_fn)
    with pytest.raises(DataError, match="reads ground-truth object boxes"):
        service.perspectives(roles["train"], keywords="rules", generator="oracle-boxes", backbone=backbone_fn)


def test_the_oracle_returns_each_keywords_object_box():
    objects = [ObjectBox("storage tank", (0, 0, 10, 10)), ObjectBox("storage tank", (20, 20, 40, 40)),
               ObjectBox("road", (0, 50, 128, 60))]
    item = ItemContext("d", "val", "val", "gallery", 0, "img.png", Path("img.png"), ground_truth=objects)
    largest = OracleBoxesGenerator(OracleOptions(), None).generate(item, ["storage tank", "ship", "road"])
    assert [(p.keyword, p.box) for p in largest] == [("storage tank", (20, 20, 40, 40)), ("road", (0, 50, 128, 60))]
    union = OracleBoxesGenerator(OracleOptions("union"), None).generate(item, ["storage tank"])
    assert union[0].box == (0, 0, 40, 40)


SEEN: dict[str, object] = {}


class _Peek:
    """Records what ``item.object_boxes()`` answers a generator, deployable or not."""

    def __init__(self, options, env):
        self.identity = "peek"

    def generate(self, item, keywords):
        try:
            SEEN[item.image_name] = item.object_boxes()
        except GroundTruthRefused as exc:
            SEEN[item.image_name] = exc
        return []


class PeekPlugin:
    @hookimpl
    def rsitr_register_perspective_generators(self):
        return [PerspectiveGeneratorSpec(name="peek", factory=_Peek),
                PerspectiveGeneratorSpec(name="peek-oracle", factory=_Peek, deployable=False)]


@pytest.mark.parametrize("generator,granted", [("peek", False), ("peek-oracle", True)])
def test_only_a_non_deployable_generator_is_handed_the_boxes(corpus, backbone_fn, tmp_path, generator, granted):
    host = build_plugin_host(extra_plugins=[("keywords", rsitr_bench.keywords), ("peek", PeekPlugin())])
    service = GuidanceService(host, corpus, LeakageAudit(), tmp_path, progress=False)
    SEEN.clear()
    split = corpus["train"]
    service.perspectives(split, keywords="rules", generator=generator, backbone=backbone_fn, indices=[0])
    seen = SEEN[split.image_names[0]]
    if granted:
        assert seen == tuple(split.object_boxes[0])
    else:
        assert isinstance(seen, GroundTruthRefused)
    assert service.non_deployable == ({generator} if granted else set())


def test_default_contexts_carry_no_ground_truth(corpus):
    (item, *_) = item_contexts(corpus["val"], "val", "gallery", LeakageAudit())
    with pytest.raises(GroundTruthRefused, match="deployable=False"):
        item.object_boxes()
    assert "ground_truth" not in {f.name for f in dataclasses.fields(item)}  # not in asdict/vars


def _eval(capsys, generator: str, *extra: str) -> dict:
    code = main(["eval-perspectives", "--dataset", "synthetic-rs", "--set", "dataset.n_train=8",
                 "--set", "dataset.n_val=6", "--set", "dataset.n_test=2", "--pretrained", "none",
                 "--perspectives", generator, "--no-progress", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_eval_perspectives_oracle_is_exact_and_grid_is_not(capsys):
    oracle = _eval(capsys, "oracle-boxes", "--limit", "5")
    assert oracle["split"] == "val" and oracle["images"] == 5 and oracle["deployable"] is False
    assert oracle["keywords"] == "vocabulary" and oracle["leakage_audit"]["status"] == "pass"
    assert oracle["summary"]["keywords_scored"] > 0
    assert oracle["summary"]["mean_iou"] == 1.0 and oracle["summary"]["hit_rate"] == 1.0
    grid = _eval(capsys, "grid", "--split", "train", "--keywords", "rules")
    assert grid["split"] == "train" and grid["images"] == 8 and grid["deployable"] is True
    assert grid["summary"]["keywords_without_object"] == 0  # rules keywords name the image's own objects
    assert grid["summary"]["mean_iou"] < 0.5
    assert all(m["iou"] == pytest.approx(box_iou(m["box"], m["truth"])) for m in grid["matches"])


def test_eval_perspectives_prints_a_table(capsys):
    assert main(["eval-perspectives", "--set", "dataset.n_train=4", "--set", "dataset.n_val=3",
                 "--set", "dataset.n_test=1", "--pretrained", "none", "--perspectives", "oracle-boxes",
                 "--split", "train", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mean IoU 1.000" in out and "upper bound, not a deployable localiser" in out


@pytest.mark.slow
def test_a_run_with_oracle_perspectives_is_stamped_and_not_compliant(capsys):
    assert main(["run", "--method", "mps-clip", "--no-progress", "--set", "dataset.n_train=16",
                 "--set", "dataset.n_val=8", "--set", "dataset.n_test=8", "--set", "train.epochs=1",
                 "--set", "train.batch_size=16", "--set", "eval.bootstrap=0", "--set", "method.max_perspectives=2",
                 "--set", "method.perspectives=oracle-boxes"]) == 0
    out = capsys.readouterr().out
    assert "NON-COMPLIANT" in out and ORACLE_REASON in out
    (row,) = home_registry().list()
    result = json.loads((home_registry().run_dir(row.id) / "metrics.json").read_text())
    assert result["compliance"] == {"compliant": False, "reasons": [ORACLE_REASON]}
    assert result["oracle_perspectives"] == ["oracle-boxes"] and row.compliant == 0
    assert result["leakage_audit"]["status"] == "pass"  # boxes are not captions: the leak audit is unaffected
    assert result["per_seed"]["0"]["oracle_perspectives"] == ["oracle-boxes"]
