"""``dense-clip``: sliding windows, their stitching into one map at image resolution, and the regions.

Random weights localise nothing, so the stitching is checked with planted patch embeddings computed from the
pixels themselves (a patch's embedding says how bright it is): the map must then be brightest exactly where
the image is, which fails if windows are placed, flipped or scaled wrongly. The real tiny backbone checks the
shapes, the boxes' bounds and determinism; the plugin manager must offer the generator by name.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import rsitr_bench.clip.patches as patches
from rsitr_bench.api import GuidanceEnv
from rsitr_bench.clip.patches import patch_text_similarity, sliding_window_similarity, window_boxes
from rsitr_bench.errors import ConfigError, UserError
from rsitr_bench.guidance.context import ItemContext
from rsitr_bench.harness.options import build_section
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.perspectives.dense_clip import DenseClipGenerator, DenseClipOptions
from rsitr_bench.perspectives.saliency import region_from_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A bright rectangle on a dark, off-centre spot of a non-square image: x 70-86, y 20-32 of 112 x 96.
SIZE, SPOT = (112, 96), (70, 20, 86, 32)


def _spot_image() -> Image.Image:
    arr = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    x0, y0, x1, y1 = SPOT
    arr[y0:y1, x0:x1] = 255
    return Image.fromarray(arr)


def _brightness_embeddings(backbone, pixels: torch.Tensor, source="value") -> torch.Tensor:
    """Planted patch embeddings ``[n, gh, gw, 2]``: (brightness, darkness) of each patch, unit length."""
    grid = backbone.model.visual.grid_size
    bright = F.adaptive_avg_pool2d(pixels.mean(1, keepdim=True), grid)[:, 0]
    bright = (bright - bright.amin()) / (bright.amax() - bright.amin() + 1e-9)
    return F.normalize(torch.stack([bright, 1 - bright], dim=-1), dim=-1)


def _env(backbone, tmp_path) -> GuidanceEnv:
    return GuidanceEnv(backbone=lambda: backbone, train_captions=[], cache_dir=tmp_path,
                       log=logging.getLogger("test.dense"), counters=Counter())


@pytest.mark.parametrize("width,height,window,stride", [(128, 128, 32, 16), (112, 96, 24, 10), (50, 30, 40, 7)])
def test_windows_are_square_cover_every_pixel_and_end_flush(width, height, window, stride):
    boxes = window_boxes(width, height, window, stride)
    cover = np.zeros((height, width), int)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] += 1
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 == min(window, width) and y1 - y0 == min(window, height)
    assert (cover >= 1).all()
    assert max(b[2] for b in boxes) == width and max(b[3] for b in boxes) == height
    assert window_boxes(128, 128, 32, 16)[:2] == [(0, 0, 32, 32), (16, 0, 48, 32)] and len(boxes) > 1


def test_stitched_map_is_bright_exactly_where_the_image_is(tiny_backbone, monkeypatch):
    monkeypatch.setattr(patches, "patch_embeddings", _brightness_embeddings)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # "bright", "dark"
    maps = sliding_window_similarity(tiny_backbone, _spot_image(), text, window=24, stride=6)
    assert maps.shape == (2, SIZE[1], SIZE[0])
    x0, y0, x1, y1 = SPOT
    inside, outside = np.zeros(maps.shape[1:], bool), np.ones(maps.shape[1:], bool)
    inside[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = True
    outside[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = False
    assert maps[0][inside].min() > maps[0][outside].max()
    assert maps[1][inside].max() < maps[1][outside].min()
    region = region_from_map(maps[0], SIZE, threshold=0.5)
    # within 3 pixels of the spot; the whole-image 8 x 8 grid can only answer in cells of 14 x 12 pixels
    assert all(abs(a - b) <= 3 for a, b in zip(region.box, SPOT)), region.box


def test_one_window_over_a_square_image_is_the_upsampled_whole_image_map(tiny_backbone):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    text = F.normalize(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    whole = torch.from_numpy(patch_text_similarity(tiny_backbone, image, text, "final"))
    expected = F.interpolate(whole[None], size=(96, 96), mode="bilinear", align_corners=False)[0]
    dense = sliding_window_similarity(tiny_backbone, image, text, "final", window=96)
    assert np.allclose(dense, expected.numpy(), atol=1e-5)


@pytest.mark.slow
def test_dense_clip_regions_on_the_real_backbone_are_in_bounds_and_deterministic(tiny_backbone, tmp_path):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    path = tmp_path / "scene.png"
    image.save(path)
    item = ItemContext("d", "val", "val", "gallery", 0, path.name, path)
    keywords = ["tennis court", "storage tank", "ship"]

    def run(options: DenseClipOptions) -> list:
        return DenseClipGenerator(options, _env(tiny_backbone, tmp_path)).generate(item, keywords)

    found = run(DenseClipOptions())
    assert [p.keyword for p in found] == keywords
    for p in found:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 80
        assert p.mask.shape == (80, 120) and p.mask.any()
        rows, cols = np.flatnonzero(p.mask.any(1)), np.flatnonzero(p.mask.any(0))
        assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == p.box  # the box is the mask's extent
    again = run(DenseClipOptions())
    assert [(p.box, p.score) for p in again] == [(p.box, p.score) for p in found]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again, found))
    assert [p.box for p in run(DenseClipOptions(reference="none"))] != [p.box for p in found]


def test_generator_identity_tracks_its_options_and_lexicon_and_not_clip_saliency(tiny_backbone, tmp_path,
                                                                                 monkeypatch):
    import rsitr_bench.perspectives.dense_clip as dense_clip
    from rsitr_bench.perspectives.saliency import ClipSaliencyGenerator, ClipSaliencyOptions

    env = _env(tiny_backbone, tmp_path)
    default = DenseClipGenerator(DenseClipOptions(), env).identity
    unreferenced = DenseClipGenerator(DenseClipOptions(reference="none"), env).identity
    ids = {default, unreferenced, DenseClipGenerator(DenseClipOptions(window=0.5), env).identity,
           ClipSaliencyGenerator(ClipSaliencyOptions(), env).identity}
    assert len(ids) == 4
    monkeypatch.setattr(dense_clip, "OBJECT_NOUNS", (*dense_clip.OBJECT_NOUNS, "lighthouse"))
    assert DenseClipGenerator(DenseClipOptions(), env).identity != default  # new word, new cache entries
    assert DenseClipGenerator(DenseClipOptions(reference="none"), env).identity == unreferenced


def test_planted_similarity_gives_the_planted_box(tiny_backbone, tmp_path):
    """The region is the planted map's blob, mapped from the map's grid to pixels whatever its resolution."""
    image = Image.new("RGB", SIZE)
    sim = np.zeros((1, SIZE[1], SIZE[0]))
    x0, y0, x1, y1 = SPOT
    sim[0, y0:y1, x0:x1] = 1.0
    generator = DenseClipGenerator(DenseClipOptions(), _env(tiny_backbone, tmp_path),
                                   similarity=lambda *_: sim)
    region = generator.regions(image, ["pool"])["pool"]
    assert region.box == SPOT and region.mask.sum() == (x1 - x0) * (y1 - y0)


def test_a_tower_without_patch_tokens_is_refused_with_a_hint(tiny_backbone, tmp_path):
    from open_clip.model import ModifiedResNet

    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=64, heads=2, image_size=64, width=8)
    fake = dataclasses.replace(tiny_backbone, model=SimpleNamespace(visual=resnet, parameters=resnet.parameters))
    generator = DenseClipGenerator(DenseClipOptions(reference="none"), _env(fake, tmp_path))
    generator._text["pool"] = torch.ones(64)  # the text tower is not what is refused
    with pytest.raises(UserError, match="ModifiedResNet .* Use the 'grid' generator"):
        generator.regions(Image.new("RGB", (64, 64)), ["pool"])


def test_options_are_checked():
    assert build_section(DenseClipOptions, {"window": "0.5", "reference": "none"}, "perspectives") == \
        DenseClipOptions(window=0.5, reference="none")
    for key, bad in (("window", 0.0), ("window", 1.5), ("stride", 0.0), ("threshold", 2.0), ("reference", "x")):
        with pytest.raises(ConfigError, match=f"{key}="):
            build_section(DenseClipOptions, {key: bad}, "perspectives")


@pytest.mark.slow
def test_registered_through_the_plugin_manager(make_service, corpus, backbone_fn):
    entry = build_plugin_host().get("perspectives", "dense-clip")
    assert entry.spec.factory is DenseClipGenerator and entry.spec.options is DenseClipOptions
    result = make_service().perspectives(corpus["val"], keywords="vocabulary", generator="dense-clip",
                                         backbone=backbone_fn, max_per_image=2)
    assert result.stats["invalid_perspectives"] == 0
    assert [[p.keyword for p in found] for found in result.perspectives] == result.keywords
