"""``synthetic-rs-fine``: the regime it is defined by, determinism, ground truth, seeds and registration."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.datasets import synthetic
from rsitr_bench.datasets.synthetic import ANNOTATION_FILE, SyntheticOptions, corpus_key, generate
from rsitr_bench.datasets.synthetic_fine import (
    RECIPE,
    SPEC,
    FineOptions,
    family_seed,
    image_seed,
    make_fine_dataset,
    render_family,
    render_item,
)
from rsitr_bench.datasets.synthetic_fine_scenes import (
    BACKBONE_INPUT,
    COUNTS,
    FAMILY_SIZE,
    GROUP_PX,
    GROUP_SLOTS,
    IMAGE_SIZE,
    MAX_OBJECT_PX,
    SCALES,
    SLOT_PX,
    Family,
    looks_of,
    plan_family,
)
from rsitr_bench.datasets.synthetic_scenes import COLOR_JITTER, KINDS, PALETTE, Canvas
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.lexicon import OBJECT_NOUNS, normalize_keyword
from rsitr_bench.harness.paths import cache_dir
from rsitr_bench.keywords.rules import RulesOptions, build_lexicon
from rsitr_bench.perspectives.oracle import oracle_box

REPO = Path(__file__).resolve().parents[1]
SMALL = FineOptions(n_train=10, n_val=3, n_test=3)
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELS = tuple(SCALES)
COUNTED = re.compile(rf"\b({'|'.join(NUMBER_WORDS)}) (?:({'|'.join(PALETTE)}) )?({'|'.join(LABELS)})s?\b")
VAGUE = re.compile(r"\b(some|several|many|a few)\b")


@pytest.fixture(scope="module")
def families() -> list[list[tuple]]:
    """Eight whole families (64 scenes) of the default corpus's train split."""
    return [list(render_family(0, "train", f, range(FAMILY_SIZE))) for f in range(8)]


@pytest.fixture(scope="module")
def noiseless() -> list[tuple[Family, list[np.ndarray], list]]:
    """Per family: its plan, each member's pixels before sensor noise, and the member scenes."""
    out = []
    finish = Canvas.finish
    painted: list[np.ndarray] = []

    def capture(self: Canvas) -> object:
        painted.append(self.rgb.copy())
        return finish(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Canvas, "finish", capture)
        for f in range(4):
            plan = plan_family(np.random.default_rng(family_seed(0, "val", f)))
            scenes = [scene for scene, _ in render_family(0, "val", f, range(FAMILY_SIZE))]
            out.append((plan, painted[-FAMILY_SIZE:], scenes))
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_regenerating_gives_identical_bytes_and_a_smaller_corpus_is_a_prefix(tmp_path):
    first, again = generate(tmp_path / "a", SMALL, RECIPE), generate(tmp_path / "b", SMALL, RECIPE)
    assert digests(first) == digests(again)
    assert len(digests(first)) == 10 + 3 + 3 + 1
    smaller = generate(tmp_path / "c", FineOptions(n_train=3, n_val=0, n_test=1), RECIPE)
    big, small = digests(first), digests(smaller)
    assert all(big[name] == small[name] for name in small if name.endswith(".png"))
    scene, captions = render_item(SMALL, "train", 9)  # the second family's second member, drawn alone
    document = json.loads((first / ANNOTATION_FILE).read_text())
    assert document["splits"]["train"][9]["captions"] == captions
    assert document["splits"]["train"][9]["objects"] == [
        {"label": o.label, "color": o.color, "box": list(o.box)} for o in scene.objects]


def test_generated_on_first_use_into_the_cache_with_the_default_split_sizes():
    assert all(FineOptions().count(s) == SyntheticOptions().count(s) for s in ("train", "val", "test"))
    dataset = SPEC.factory(None, SMALL)
    split = dataset.load_split("val")
    assert (split.dataset, split.n_images, split.n_captions) == ("synthetic-rs-fine", 3, 15)
    assert split.object_boxes is not None and all(split.object_boxes)
    expected = cache_dir() / "datasets" / "synthetic-rs-fine" / corpus_key(SMALL, RECIPE)
    assert (expected / ANNOTATION_FILE).is_file()
    with pytest.raises(DataError, match="synthetic-rs-fine has no split"):
        make_fine_dataset(None, FineOptions(n_train=1, n_val=0, n_test=1)).load_split("val")


def test_every_named_object_spans_at_most_two_pixels_of_the_backbone_input(families):
    """The property the regime is defined by: the global view (a resize to the backbone input) loses it."""
    config = json.loads((REPO / "rsitr_bench" / "clip" / "model_configs" / "rsitr-tiny.json").read_text())
    assert config["vision_cfg"]["image_size"] == BACKBONE_INPUT
    downsample = IMAGE_SIZE / BACKBONE_INPUT
    assert MAX_OBJECT_PX / downsample <= 2
    sides = Counter()
    for family in families:
        for scene, _ in family:
            assert scene.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE, obj
                assert max(x1 - x0, y1 - y0) <= MAX_OBJECT_PX, obj
                sides[obj.label] = max(sides[obj.label], x1 - x0, y1 - y0)
    assert set(sides) >= {"building", "storage tank"}


@pytest.mark.slow
def test_sprites_fit_their_slot_at_every_size_they_are_drawn():
    rng = np.random.default_rng(5)
    canvas = Canvas(rng, 32, "grassland")
    for label, scale in SCALES.items():
        color = PALETTE[KINDS[label].colors[0]]
        for _ in range(500):
            sprite = KINDS[label].sprite(rng, scale, color)
            assert max(sprite.half_w, sprite.half_h) <= SLOT_PX / 2, label
            box = canvas.place_at(sprite, 16 + rng.uniform(-0.5, 0.5), 16 + rng.uniform(-0.5, 0.5))
            assert box is not None and max(box[2] - box[0], box[3] - box[1]) <= MAX_OBJECT_PX, label


def test_boxes_are_tight_on_the_painted_object(noiseless):
    """Each box is exactly the extent of its object's own pixels in its slot: changed, not shadow or wake."""
    for plan, painted, scenes in noiseless:
        background = plan.canvas.rgb
        groups = {g.label: g for g in plan.groups}
        for rgb, scene in zip(painted, scenes, strict=True):
            cast = [background == rgb, background * np.float32(0.55) == rgb, background * np.float32(1.45) == rgb,
                    background * np.float32(1.45) * np.float32(0.55) == rgb]
            own = ~np.logical_or.reduce(cast).all(axis=2)
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                group = groups[obj.label]
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2  # the slot holding the box's centre
                sx, sy = cx - (cx - group.x0) % SLOT_PX, cy - (cy - group.y0) % SLOT_PX
                assert sx <= x0 and x1 <= sx + SLOT_PX and sy <= y0 and y1 <= sy + SLOT_PX, obj
                slot = own[sy:sy + SLOT_PX, sx:sx + SLOT_PX]
                rows, cols = np.flatnonzero(slot.any(axis=1)), np.flatnonzero(slot.any(axis=0))
                assert (sx + cols[0], sy + rows[0], sx + cols[-1] + 1, sy + rows[-1] + 1) == obj.box, obj
                patch = rgb[y0:y1, x0:x1]
                assert (np.abs(patch - np.array(PALETTE[obj.color])).max(axis=2) <= COLOR_JITTER).any(), obj


def test_a_family_shares_its_background_and_groups_and_differs_only_in_colour_and_count(noiseless, families):
    for plan, painted, scenes in noiseless:
        background = plan.canvas.rgb
        for rgb, scene in zip(painted, scenes, strict=True):
            boxes = np.zeros(background.shape[:2], bool)
            for x0, y0, x1, y1 in (o.box for o in scene.objects):
                boxes[max(0, y0 - SLOT_PX):y1 + SLOT_PX, max(0, x0 - SLOT_PX):x1 + SLOT_PX] = True
            assert (rgb[~boxes] == background[~boxes]).all()  # away from the objects: the very same pixels
    for family in families:
        scenes = [scene for scene, _ in family]
        assert len({(s.background, s.coast) for s in scenes}) == 1
        assert len({frozenset(o.label for o in s.objects) for s in scenes}) == 1
        for label in {o.label for o in scenes[0].objects}:
            looks = []
            for s in scenes:
                objects = [o for o in s.objects if o.label == label]
                assert len({o.color for o in objects}) == 1 and COUNTS[0] <= len(objects) <= COUNTS[1]
                looks.append((objects[0].color, len(objects)))
                union = oracle_box(objects, "union")
                assert union[2] - union[0] <= GROUP_PX and union[3] - union[1] <= GROUP_PX
            assert len(set(looks)) == FAMILY_SIZE, (label, looks)  # no two members alike in this group
    assert all(len(looks_of(label)) >= FAMILY_SIZE for label in SCALES)
    assert GROUP_SLOTS ** 2 >= COUNTS[1]


def test_captions_name_the_true_colours_and_exact_counts_of_the_small_objects(families):
    counted = 0
    for family in families:
        for scene, captions in family:
            pairs = {(o.label, o.color) for o in scene.objects}
            for caption in captions:
                text = caption.lower()
                assert not VAGUE.search(text), caption
                named = [(label, color) for label in LABELS for color in PALETTE
                         if re.search(rf"\b{color} {label}s?\b", text)]
                assert all(pair in pairs for pair in named), (caption, pairs)
                colors = {o.color for o in scene.objects}
                assert any(re.search(rf"\b{c}\b", text) for c in colors), caption  # a colour is always named
                for number, color, label in COUNTED.findall(text):
                    count = sum(o.label == label and (not color or o.color == color) for o in scene.objects)
                    assert NUMBER_WORDS.index(number) + 1 == count, (caption, scene.objects)
                    counted += 1
    assert counted >= 2 * sum(len(f) for f in families)  # counts are stated, not just allowed


def test_oracle_boxes_find_every_object_a_training_caption_names(families):
    """Keywords of the rules provider are object labels, so ``oracle-boxes`` maps each to its boxes."""
    assert all(normalize_keyword(label) == label and label in OBJECT_NOUNS for label in LABELS)
    lexicon = build_lexicon(RulesOptions())
    for family in families:
        for scene, captions in family:
            by_label = {o.label for o in scene.objects}
            keywords = {k for c in captions for k in lexicon.find(c)}
            assert keywords and keywords <= by_label, (captions, by_label)


@pytest.mark.parametrize("seed", [0, 1000])
def test_no_generator_stream_is_one_of_the_embedded_backbones_pretraining_corpus(seed):
    """The backbone's corpus is read from its weights' record, so a change on either side is caught."""
    record = json.loads((REPO / "rsitr_bench" / "clip" / "weights" / "rsitr-tiny-synthetic-rs.json").read_text())
    corpus = record["pretrain_corpus"]
    assert corpus["dataset"] == "synthetic-rs"
    pretrain = {synthetic.stream_seed(corpus["dataset"], corpus["seed"], split, i)
                for split in ("train", "val", "test") for i in range(corpus[f"n_{split}"])}
    assert len(pretrain) == corpus["n_train"] + corpus["n_val"] + corpus["n_test"] == 4300
    options = FineOptions(seed=seed)
    ours = {image_seed(seed, split, i) for split in ("train", "val", "test") for i in range(options.count(split))}
    ours |= {family_seed(seed, split, f) for split in ("train", "val", "test")
             for f in range(-(-options.count(split) // FAMILY_SIZE))}
    assert len(ours) == 1400 + 175
    assert not ours & pretrain


@pytest.mark.slow
def test_registered_and_listed(capsys):
    assert main(["list", "datasets"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^synthetic-rs-fine\s+rsitr-bench", listed, re.MULTILINE), listed
    assert re.search(r"^synthetic-rs\s+rsitr-bench", listed, re.MULTILINE), listed
