"""Keyword-free and CLIP-based perspectives, the mask cache, crops, drawing and mask export.

What random weights can and cannot prove: the tiny backbone localises nothing, so ``clip-saliency`` is
checked in two halves. (1) The patch-embedding path is checked against the model itself (the value path
equals the last attention block run with self-only attention). (2) The map-to-box geometry is checked on
synthetic-rs with a planted similarity map that is high exactly on an object's ground-truth box: the box
returned must cover that object and stay within one patch of it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from rsitr_bench.api import GuidanceEnv
from rsitr_bench.clip.patches import full_view_pixels, patch_embeddings
from rsitr_bench.guidance.context import Perspective
from rsitr_bench.guidance.geo import export_masks
from rsitr_bench.guidance.lexicon import normalize_keyword
from rsitr_bench.guidance.perspective_cache import PerspectiveCache, rle_decode, rle_encode
from rsitr_bench.guidance.render import render_perspectives
from rsitr_bench.guidance.service import crop_perspectives
from rsitr_bench.perspectives.grid import grid_boxes
from rsitr_bench.perspectives.saliency import ClipSaliencyGenerator, ClipSaliencyOptions, region_from_map
from tests.fixtures.guidance import box_contains, gt_boxes, oracle_similarity

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
@pytest.mark.slow
def test_rle_round_trips_any_mask(mask):
    runs = rle_encode(mask)
    assert sum(runs) == mask.size
    assert np.array_equal(rle_decode(runs, mask.shape), mask)


def test_rle_is_compact_and_rejects_runs_of_the_wrong_size():
    mask = np.zeros((256, 256), bool)
    mask[40:90, 100:180] = True
    assert len(rle_encode(mask)) == 101
    with pytest.raises(ValueError):
        rle_decode([3, 4], (3, 3))


def _item(path, index=0):
    from rsitr_bench.guidance.context import ItemContext

    return ItemContext("d", "train", "train", "query", index, path.name, path)


def test_perspective_cache_round_trip_nothing_found_and_corruption(tmp_path):
    counters: Counter = Counter()
    cache = PerspectiveCache(tmp_path, counters)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    found = [Perspective("tennis court", (2, 1, 5, 3), 0.75, mask), Perspective("road", (0, 0, 6, 1), 0.5)]
    cache.put("img", ["tennis court", "road", "tree"], "gen", (6, 4), found)
    back = cache.get("img", ["tennis court", "road", "tree"], "gen", (6, 4))
    assert back == found and np.array_equal(back[0].mask, mask) and back[1].mask is None
    cache.put("img2", ["tree"], "gen", (6, 4), [])
    assert cache.get("img2", ["tree"], "gen", (6, 4)) == []  # "nothing found" is an answer, not a miss
    assert cache.get("img", ["tree"], "gen", (6, 4)) is None
    assert cache.get("img", ["tennis court", "road", "tree"], "other-generator", (6, 4)) is None

    path = cache.store.path(cache.key("img", ["tennis court", "road", "tree"], "gen"))
    entry = json.loads(path.read_text())
    entry["payload"]["found"][0]["box"] = [0, 0, 6, 4]  # tampered: the checksum catches it
    path.write_text(json.dumps(entry))
    assert cache.get("img", ["tennis court", "road", "tree"], "gen", (6, 4)) is None
    assert counters["corrupt_cache_entries"] == 1 and not path.exists()
    cache.put("img", ["tree"], "gen", (6, 4), found[1:])
    assert cache.get("img", ["tree"], "gen", (8, 4)) is None  # recorded for an image of another size
    assert counters["corrupt_cache_entries"] == 2


def test_grid_boxes_tile_the_image():
    boxes = grid_boxes(100, 60, 2, 3, 0.0)
    cover = np.zeros((60, 100), int)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert len(boxes) == 6 and (cover == 1).all()
    assert grid_boxes(100, 100, 2, 2, 0.25)[0] == (0, 0, 62, 62)


def test_region_is_the_component_of_the_peak():
    sim = np.zeros((8, 8))
    sim[2:4, 5:7] = [[0.9, 0.8], [0.7, 1.0]]
    sim[6, 0] = 0.95  # a separate blob: not connected to the peak
    region = region_from_map(sim, (128, 64), threshold=0.5)
    assert region.box == (80, 16, 112, 32) and region.score == 1.0
    assert region.mask.shape == (64, 128) and region.mask.sum() == 32 * 16
    assert region_from_map(np.full((8, 8), 0.3), (128, 128), 0.5) is None  # flat: nothing found
    assert region_from_map(sim, (128, 128), 0.5, min_similarity=1.5) is None


def test_value_tokens_equal_the_last_block_with_self_only_attention(tiny_backbone):
    """The value path is the last attention block's output when every token attends only to itself."""
    visual = tiny_backbone.model.visual
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8))
    pixels = full_view_pixels(tiny_backbone, image)
    inputs = []
    hook = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
    with torch.inference_mode():
        visual(pixels)
    hook.remove()
    block = visual.transformer.resblocks[-1]
    length = inputs[0].shape[1]
    self_only = torch.full((length, length), float("-inf")).fill_diagonal_(0.0)
    with torch.inference_mode():
        x = block.ln_1(inputs[0])
        attended = block.ls_1(block.attn(x, x, x, need_weights=False, attn_mask=self_only)[0])
        expected = torch.nn.functional.normalize(visual.ln_post(attended[:, 1:]) @ visual.proj, dim=-1)
    got = patch_embeddings(tiny_backbone, pixels, "value")[0]
    grid = visual.grid_size
    assert got.shape == (*grid, 64)
    assert torch.allclose(got.reshape(-1, 64), expected[0], atol=1e-5)
    final = patch_embeddings(tiny_backbone, pixels, "final")[0]
    assert torch.allclose(final.norm(dim=-1), torch.ones(grid))


def _env(backbone_fn, tmp_path) -> GuidanceEnv:
    return GuidanceEnv(backbone=backbone_fn, train_captions=[], cache_dir=tmp_path,
                       log=logging.getLogger("test.perspectives"), counters=Counter())


def test_clip_saliency_boxes_cover_the_named_objects(corpus, backbone_fn, tmp_path):
    """With a similarity map that is high on the object (a perfectly localising CLIP), box ⊇ object."""
    train = corpus["train"]
    generator = ClipSaliencyGenerator(ClipSaliencyOptions(), _env(backbone_fn, tmp_path))
    checked = 0
    for index in range(train.n_images):
        keywords = sorted({o["label"] for o in train.annotations["objects"][index]} - {"road", "river"})
        if not keywords:
            continue
        generator.similarity = oracle_similarity(train, index, keywords)
        from rsitr_bench.guidance.context import ItemContext

        item = ItemContext("synthetic-rs", "train", "train", "query", index, train.image_names[index],
                           train.image_paths[index])
        found = {p.keyword: p for p in generator.generate(item, keywords)}
        assert set(found) == set(keywords)
        patch = 128 // 8
        for keyword in keywords:
            truth = gt_boxes(train, index, keyword)[0]
            box = found[keyword].box
            assert box_contains(box, truth), (keyword, box, truth)
            assert box_contains(tuple(np.add(truth, (-patch, -patch, patch, patch))), box)
            assert found[keyword].mask[truth[1]:truth[3], truth[0]:truth[2]].all()
            checked += 1
    assert checked >= 4


def test_clip_saliency_through_the_service_is_cached(make_service, corpus, backbone_fn):
    service = make_service()
    first = service.perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                 backbone=backbone_fn, max_per_image=2)
    assert first.stats["generator_calls"] == corpus["train"].n_images
    for keywords, found in zip(first.keywords, first.perspectives):
        assert [p.keyword for p in found] == keywords  # random weights still give one region per keyword
        assert all(p.mask.shape == (128, 128) for p in found)
    again = make_service().perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                        backbone=backbone_fn, max_per_image=2)
    assert again.stats["generator_calls"] == 0 and again.stats["perspective_cache_hits"] == len(first.indices)
    assert again.perspectives == first.perspectives
    other = make_service().perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                        backbone=backbone_fn, max_per_image=2,
                                        generator_options={"threshold": 0.9})
    assert other.stats["perspective_cache_misses"] == len(first.indices)


def test_crops_and_masked_sub_images():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    image = Image.fromarray(pixels)
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:4] = True
    persp = [Perspective("a", (2, 1, 5, 4), 1.0, mask), Perspective("b", (6, 4, 8, 6)),
             Perspective("c", (7, 5, 7, 5))]
    crops = crop_perspectives(image, persp, "crop")
    assert [c.size for c in crops] == [(3, 3), (2, 2), (1, 1)]
    assert np.array_equal(np.asarray(crops[0]), pixels[1:4, 2:5])
    masked = [np.asarray(m) for m in crop_perspectives(image, persp, "masked")]
    assert masked[0].shape == pixels.shape
    assert np.array_equal(masked[0][mask], pixels[mask]) and not masked[0][~mask].any()
    assert np.array_equal(masked[1][4:6, 6:8], pixels[4:6, 6:8]) and masked[1][:4].sum() == 0
    with pytest.raises(ValueError):
        crop_perspectives(image, persp, "blur")


def test_render_draws_keywords_masks_and_nothing_found(tmp_path):
    image = Image.new("RGB", (64, 48), (20, 120, 40))
    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:30] = True
    found = [Perspective("storage tank", (5, 10, 30, 20), 0.8, mask)]
    canvas = render_perspectives(image, ["storage tank", "ship"], found, title="demo")
    assert canvas.width > 384 and canvas.height >= 288
    view = np.asarray(canvas)[: 288, : 384]
    assert (view != np.asarray(image.resize((384, 288), Image.NEAREST))).any()  # something drawn
    canvas.save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").size == canvas.size


def test_export_masks_keeps_the_georeference_of_geotiffs(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    transform = from_origin(500000.0, 4649776.0, 0.5, 0.5)
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=24, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(np.zeros((3, 24, 32), np.uint8))
    written = export_masks(path, [Perspective("tennis court", (4, 2, 10, 8))], tmp_path / "out")
    assert [p.name for p in written] == ["scene_00_tennis-court.tif"]
    with rasterio.open(written[0]) as src:
        assert src.crs.to_epsg() == 32633 and src.transform == transform
        band = src.read(1)
    assert band[2:8, 4:10].all() and band.sum() == 255 * 36
    png = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(png)
    assert export_masks(png, [Perspective("", (0, 0, 4, 4))], tmp_path / "out")[0].name == "plain_00_cell.png"


def test_keywords_are_normalised_consistently_for_file_names_and_caches():
    assert normalize_keyword("Tennis courts") == normalize_keyword("tennis_court") == "tennis court"


def test_clip_saliency_refuses_backbones_without_patch_tokens(tiny_backbone):
    import dataclasses
    from types import SimpleNamespace

    from rsitr_bench.errors import UserError

    fake = dataclasses.replace(tiny_backbone, model=SimpleNamespace(visual=torch.nn.Identity()))
    with pytest.raises(UserError, match="'grid'"):
        patch_embeddings(fake, torch.zeros(1, 3, 64, 64))
