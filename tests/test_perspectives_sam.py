"""The SAM-based generators (``samgeo``, ``sam-auto``) with offline random-weight SAM and GroundingDINO.

Random weights segment and detect nothing meaningful, so these tests prove the pipeline, not its quality:
boxes come from the localizer and reach the right keyword; SAM runs once per image from one embedding (and
not at all when nothing is found); masks stay inside their boxes; missing checkpoints fail with the file
name and samgeo's folder; LangSAM is never imported without groundingdino. That ``samgeo`` returns boxes for
the named objects is shown with a localizer whose similarity map is planted on the ground-truth boxes.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("samgeo")

from rsitr_bench.api import GuidanceEnv  # noqa: E402
from rsitr_bench.errors import CheckpointError, UserError  # noqa: E402
from rsitr_bench.guidance.context import ItemContext, Perspective  # noqa: E402
from rsitr_bench.perspectives.detector import (  # noqa: E402
    GroundingDinoLocalizer,
    LangSamLocalizer,
    assign,
    keyword_prompt,
    token_groups,
)
from rsitr_bench.perspectives.sam_guided import SamGeoGenerator, SamGeoOptions, merge_instances  # noqa: E402
from rsitr_bench.perspectives.sam_models import TINY_SAM, resolve_sam_checkpoint  # noqa: E402
from rsitr_bench.perspectives.tiny_models import build_tiny_grounding_dino  # noqa: E402
from tests.fixtures.guidance import box_contains, gt_boxes, oracle_similarity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"sam_model_type": TINY_SAM}


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


def _env(backbone_fn, tmp_path) -> GuidanceEnv:
    return GuidanceEnv(backbone=backbone_fn, train_captions=[], cache_dir=tmp_path,
                       log=logging.getLogger("test.sam"), counters=Counter())


def _item(split, index) -> ItemContext:
    return ItemContext(split.dataset, split.name, "train", "query", index, split.image_names[index],
                       split.image_paths[index])


@pytest.mark.slow
def test_samgeo_returns_sam_masks_inside_the_boxes_of_the_named_objects(corpus, backbone_fn, tmp_path):
    train = corpus["train"]
    env = _env(backbone_fn, tmp_path)
    generator = SamGeoGenerator(SamGeoOptions(localizer="clip-saliency", **TINY), env)
    images = 0
    for index in range(train.n_images):
        keywords = sorted({o["label"] for o in train.annotations["objects"][index]} - {"road", "river"})
        if not keywords or images == 2:
            continue
        generator.localizer().similarity = oracle_similarity(train, index, keywords)
        found = {p.keyword: p for p in generator.generate(_item(train, index), keywords)}
        images += 1
        assert set(found) == set(keywords)
        for keyword, p in found.items():
            assert box_contains(p.box, gt_boxes(train, index, keyword)[0])
            assert p.mask.shape == (128, 128) and p.mask.any()
            outside = p.mask.copy()
            outside[p.box[1]:p.box[3], p.box[0]:p.box[2]] = False
            assert not outside.any()
    assert images == 2
    assert env.counters["sam_image_encoder_calls"] == images  # one embedding per image, all keywords


def test_nothing_found_costs_no_sam_call_and_reuses_nothing(corpus, backbone_fn, tmp_path):
    env = _env(backbone_fn, tmp_path)
    generator = SamGeoGenerator(SamGeoOptions(localizer="clip-saliency", **TINY), env)
    generator.localizer().similarity = lambda backbone, image, text, tokens: np.zeros((len(text), 8, 8))
    assert generator.generate(_item(corpus["train"], 0), ["storage tank", "tree"]) == []
    assert env.counters["sam_image_encoder_calls"] == 0


@pytest.mark.slow
def test_samgeo_with_grounding_dino_runs_one_detector_and_one_sam_call_per_image(
        make_service, corpus, backbone_fn, tiny_detector):
    options = {**TINY, "localizer": "grounding-dino", "detector": str(tiny_detector), "box_threshold": 0.0}
    result = make_service().perspectives(corpus["train"], keywords="rules", generator="samgeo",
                                         backbone=backbone_fn, generator_options=options, indices=[0, 1])
    assert result.stats["detector_calls"] == 2 and result.stats["sam_image_encoder_calls"] == 2
    for keywords, found in zip(result.keywords, result.perspectives):
        assert [p.keyword for p in found] == keywords  # threshold 0: every keyword gets its best box
        assert all(p.mask is not None and p.mask.shape == (128, 128) for p in found)


@pytest.mark.slow
def test_auto_localizer_falls_back_to_clip_saliency_without_detector_weights(make_service, corpus,
                                                                             backbone_fn):
    options = {**TINY, "detector": "rsitr-bench-tests/no-such-detector"}
    result = make_service().perspectives(corpus["train"], keywords="rules", generator="samgeo",
                                         backbone=backbone_fn, generator_options=options, indices=[0, 1])
    assert result.stats["localizer_fallbacks"] == 2 and result.stats["detector_calls"] == 0
    assert result.stats["sam_image_encoder_calls"] == 2


def test_keyword_tokens_are_found_by_character_offsets(tiny_detector, tmp_path):
    from transformers import AutoProcessor

    keywords = ["tennis court", "storage tank", "tree"]
    prompt, spans = keyword_prompt(keywords)
    assert prompt == "tennis court. storage tank. tree."
    assert [prompt[a:b] for a, b in spans] == keywords
    tokenizer = AutoProcessor.from_pretrained(tiny_detector, local_files_only=True).tokenizer
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    groups = token_groups(encoded["offset_mapping"], spans)
    assert [tokenizer.decode([encoded["input_ids"][t] for t in g]) for g in groups] == keywords


def test_assign_keeps_boxes_above_threshold_best_first():
    scores = np.array([[0.9, 0.1], [0.2, 0.05], [0.95, 0.3]])
    boxes = np.array([[0, 0, 4, 4], [1, 1, 2, 2], [2, 2, 6, 6]])
    assert assign(scores, boxes, ["a", "b"], 0.25, 2) == {"a": [((2, 2, 6, 6), 0.95), ((0, 0, 4, 4), 0.9)],
                                                          "b": [((2, 2, 6, 6), 0.3)]}
    assert assign(scores, boxes, ["a", "b"], 0.99, 1) == {}


def test_grounding_dino_localizer_output_is_per_keyword(tiny_detector, corpus, tmp_path):
    from PIL import Image

    counters: Counter = Counter()
    localizer = GroundingDinoLocalizer(str(tiny_detector), tmp_path, "cpu", 0.0, counters)
    image = Image.open(corpus["train"].image_paths[0]).convert("RGB")
    located = localizer.localize(image, ["storage tank", "tree"], per_keyword=3)
    assert set(located) == {"storage tank", "tree"} and counters["detector_calls"] == 1
    for boxes in located.values():
        assert 1 <= len(boxes) <= 3
        assert all(0 <= b[0] < b[2] <= 128 and 0 <= b[1] < b[3] <= 128 for b, _ in boxes)


def test_union_of_instances_merges_masks_and_boxes():
    a, b = np.zeros((4, 8), bool), np.zeros((4, 8), bool)
    a[0, 0], b[3, 7] = True, True
    prompts = [("tree", (0, 0, 1, 1), 0.4), ("tree", (7, 3, 8, 4), 0.6), ("pond", (2, 2, 3, 3), 0.5)]
    merged = merge_instances(prompts, np.stack([a, b, b]))
    assert merged[0] == Perspective("tree", (0, 0, 8, 4), 0.6) and merged[0].mask.sum() == 2
    assert [p.keyword for p in merged] == ["tree", "pond"]


def test_missing_sam_checkpoint_names_the_file_and_samgeo_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError) as err:
        resolve_sam_checkpoint("vit_h", None, tmp_path)
    assert "sam_vit_h_4b8939.pth" in str(err.value) and str(tmp_path / "torch") in str(err.value)
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        resolve_sam_checkpoint("vit_b", str(tmp_path / "nowhere.pth"), tmp_path)
    with pytest.raises(UserError, match="vit_b"):
        resolve_sam_checkpoint("vit_xxl", None, tmp_path)


def test_langsam_is_refused_and_never_imported_without_groundingdino(tmp_path):
    import importlib.util

    if importlib.util.find_spec("groundingdino") is not None:
        pytest.skip("groundingdino is installed here")
    with pytest.raises(UserError, match="groundingdino"):
        LangSamLocalizer("vit_b", tmp_path / "sam.pth", 0.3, 0.25, Counter())
    assert "samgeo.text_sam" not in sys.modules


@pytest.mark.slow
def test_sam_auto_assigns_each_keyword_a_mask(make_service, corpus, backbone_fn):
    options = {**TINY, "points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
               "min_area": 0.0}
    result = make_service().perspectives(corpus["train"], keywords="rules", generator="sam-auto",
                                         backbone=backbone_fn, generator_options=options, indices=[0])
    assert result.stats["sam_image_encoder_calls"] == 1
    found = result.perspectives[0]
    assert [p.keyword for p in found] == result.keywords[0]
    assert all(p.mask.shape == (128, 128) for p in found)
