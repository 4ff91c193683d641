"""``precomputed``: the reference's published sub-images read from a tiny test-written layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsitr_bench.data.model import Split
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.plugins import build_plugin_host

SIZE = (32, 24)


def _png(path: Path, box: tuple[int, int, int, int] | None) -> None:
    """A black-background sub-image: the image's pixels inside ``box``, black elsewhere (None: all black)."""
    pixels = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = (200, 120, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _split(root: Path, name: str, images: list[str]) -> Split:
    for image in images:
        Image.new("RGB", SIZE, (90, 90, 90)).save(root / "images" / image)
    return Split(dataset="rsitmd", name=name, image_names=images, image_paths=[root / "images" / i for i in images],
                 captions=[f"{i} has trees" for i in images for _ in range(2)],
                 caption_image=[k for k in range(len(images)) for _ in range(2)])


@pytest.fixture
def layout(tmp_path) -> Path:
    """The reference layout: images/, finetune/<ds>_{train,test}1.json with nouns, subimages/{train,test}/."""
    root = tmp_path / "rsitmd"
    (root / "images").mkdir(parents=True)
    (root / "finetune").mkdir()
    test = [{"image": "test/airport_1.tif", "caption": ["c"] * 5,
             "nouns": ["tree", "tennis courts", "tree", "road", "plane", "tennis courts"]},
            {"image": "test/beach_2.tif", "caption": ["c"] * 5, "nouns": ["sea"]}]
    train = [{"caption": "c", "image": "train/church_4.tif", "image_id": 0, "nouns": ["church"]},
             {"caption": "c", "image": "train/church_4.tif", "image_id": 0, "nouns": ["tree", "church"]}]
    (root / "finetune" / "rsitmd_test1.json").write_text(json.dumps(test))
    (root / "finetune" / "rsitmd_train1.json").write_text(json.dumps(train))
    (root / "finetune" / "rsitmd_val.json").write_text(json.dumps([{"image": "val/x.tif", "caption": ["c"]}]))
    _png(root / "subimages/test/airport_1/tree_blackbg.png", (2, 3, 10, 8))
    _png(root / "subimages/test/airport_1/tennis_courts_blackbg.png", (20, 10, 30, 20))
    _png(root / "subimages/test/airport_1/plane_blackbg.png", None)
    _png(root / "subimages/train/church_4/church_blackbg.png", (0, 0, 5, 5))
    _png(root / "subimages/train/church_4/tree_blackbg.png", (5, 5, 9, 9))
    return root


def _service(roles: dict[str, Split], tmp_path: Path, audit: LeakageAudit) -> GuidanceService:
    return GuidanceService(build_plugin_host(), roles, audit, tmp_path / "cache", progress=False)


def _perspectives(service: GuidanceService, split: Split, **options):
    return service.perspectives(split, keywords="rules", generator="precomputed", backbone=lambda: None,
                                generator_options=options or None, max_per_image=16)


def test_reads_nouns_in_order_with_multi_word_files_and_counts_what_is_missing(layout, tmp_path):
    test = _split(layout, "test", ["airport_1.tif", "beach_2.tif", "desert_5.tif"])
    result = _perspectives(_service({"test": test}, tmp_path, LeakageAudit()), test)
    first, missing_folder, no_nouns = result.perspectives
    # De-duplicated in first-occurrence order; "tennis courts" found under its underscore spelling; "road" has
    # no file; "plane" is all black (no mask to use).
    assert [p.keyword for p in first] == ["tree", "tennis courts"]
    assert first[0].box == (2, 3, 10, 8) and first[1].box == (20, 10, 30, 20)
    assert first[0].mask.shape == (SIZE[1], SIZE[0]) and int(first[0].mask.sum()) == 8 * 5
    assert missing_folder == [] and no_nouns == []
    stats = result.stats
    assert stats["precomputed_missing_folders"] == 1 and stats["precomputed_images_without_nouns"] == 1
    assert stats["precomputed_underscore_spelling"] == 1 and stats["precomputed_nouns_without_file"] == 1
    assert stats["precomputed_empty_masks"] == 1
    assert result.config["keyword_guided"] is False


def test_reference_spelling_misses_multi_word_nouns_as_published(layout, tmp_path):
    test = _split(layout, "test", ["airport_1.tif"])
    result = _perspectives(_service({"test": test}, tmp_path, LeakageAudit()), test, multi_word="reference")
    assert [p.keyword for p in result.perspectives[0]] == ["tree"]
    assert result.stats["precomputed_nouns_without_file"] == 2  # "tennis courts" and "road"


def test_gallery_use_is_stamped_fail_as_published_even_from_the_cache(layout, tmp_path):
    test = _split(layout, "test", ["airport_1.tif", "beach_2.tif"])
    for attempt in ("computed", "cached"):
        audit = LeakageAudit()
        result = _perspectives(_service({"test": test}, tmp_path, audit), test)
        assert audit.stamp()["status"] == "fail (as published)", attempt
        assert audit.stamp()["leaked_items"] == 2
    assert result.stats["perspective_cache_hits"] == 2 and result.stats["generator_calls"] == 0


def test_training_items_use_the_train_sub_images_without_a_leak(layout, tmp_path):
    train = _split(layout, "pir_train", ["church_4.tif"])
    audit = LeakageAudit()
    result = _perspectives(_service({"train": train}, tmp_path, audit), train)
    assert [p.keyword for p in result.perspectives[0]] == ["church", "tree"]
    assert audit.stamp()["status"] == "pass"


def test_missing_subimages_root_is_an_error_naming_the_folder(layout, tmp_path):
    test = _split(layout, "test", ["airport_1.tif"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DataError, match=str(elsewhere / "subimages")):
        _perspectives(_service({"test": test}, tmp_path, LeakageAudit()), test, root=str(elsewhere))
    (layout / "subimages").rename(tmp_path / "moved")
    with pytest.raises(DataError, match="no subimages/ folder") as info:
        _perspectives(_service({"test": test}, tmp_path, LeakageAudit()), test)
    assert str(layout / "subimages") in str(info.value)
