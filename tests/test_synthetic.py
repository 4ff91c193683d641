"""The embedded ``synthetic-rs`` dataset: determinism, layout, ground truth and safe generation."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsitr_bench.api import Dataset
from rsitr_bench.data.model import Split
from rsitr_bench.datasets import synthetic
from rsitr_bench.datasets.synthetic import (
    ANNOTATION_FILE,
    SPEC,
    SyntheticOptions,
    corpus_key,
    generate,
    image_seed,
    make_dataset,
    render_item,
)
from rsitr_bench.datasets.synthetic_scenes import BACKGROUNDS, COLOR_JITTER, LABELS, PALETTE
from rsitr_bench.errors import ConfigError, DataError
from rsitr_bench.harness.options import build_section
from rsitr_bench.harness.paths import cache_dir

SMALL = SyntheticOptions(n_train=6, n_val=3, n_test=3)
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# caption phrases such as "three red buildings" or "two roads": number, optional colour, label
COUNTED = re.compile(rf"\b({'|'.join(NUMBER_WORDS)}) (?:({'|'.join(PALETTE)}) )?({'|'.join(LABELS)})s?\b")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic") / "corpus", SMALL)


@pytest.fixture(scope="module")
def many_items() -> list:
    """Sixty scenes with their captions, enough to meet every background and object kind."""
    options = SyntheticOptions(seed=7)
    return [render_item(options, "train", i) for i in range(60)]


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_regenerating_gives_identical_bytes(small_corpus, tmp_path):
    again = generate(tmp_path / "again", SMALL)
    first, second = file_digests(small_corpus), file_digests(again)
    assert len(first) == 6 + 3 + 3 + 1
    assert first == second


def test_splits_have_the_requested_sizes_and_five_distinct_captions_per_image():
    dataset = make_dataset(None, SMALL)
    assert dataset.default_splits() == {"train": "train", "val": "val", "test": "test"}
    assert dataset.available_splits() == ["train", "val", "test"]
    for name, size in (("train", 6), ("val", 3), ("test", 3)):
        split = dataset.load_split(name)
        assert isinstance(split, Split)
        assert (split.dataset, split.name) == ("synthetic-rs", name)
        assert (split.n_images, split.n_captions) == (size, 5 * size)
        assert split.image_names == [f"{name}_{i:05d}.png" for i in range(size)]
        assert [p.name for p in split.image_paths] == split.image_names
        assert all(p.is_absolute() and p.is_file() for p in split.image_paths)
        assert split.caption_image.tolist() == [i for i in range(size) for _ in range(5)]
        for i in range(size):
            assert len({split.captions[j] for j in split.captions_of(i)}) == 5
        assert all(label in BACKGROUNDS for label in split.image_labels)
        assert len(split.annotations["objects"]) == size
        assert Path(split.source).name == ANNOTATION_FILE
    expected_dir = cache_dir() / "datasets" / "synthetic-rs" / corpus_key(SMALL)
    assert (expected_dir / ANNOTATION_FILE).is_file()


def test_root_option_places_the_corpus_under_root(tmp_path):
    options = SyntheticOptions(n_train=2, n_val=0, n_test=1)
    dataset = make_dataset(tmp_path, options)
    assert dataset.available_splits() == ["train", "test"]
    split = dataset.load_split("test")
    assert split.image_paths[0].parent.parent == (tmp_path / corpus_key(options)).resolve()


def test_boxes_lie_inside_the_image_and_cover_the_drawn_object(many_items):
    checked = set()
    for scene, _ in many_items:
        image = scene.image.astype(float)
        size = image.shape[0]
        boxes = [o.box for o in scene.objects]
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, obj
            if obj.label in ("road", "river"):
                continue
            patch = image[y0:y1, x0:x1]
            if obj.color is not None:
                # painted colour + jitter + a little sensor noise
                close = np.abs(patch - np.array(PALETTE[obj.color])).max(axis=2) <= COLOR_JITTER + 12
                assert close.mean() >= 0.2, obj
            if obj.label in ("building", "storage tank", "tree", "ship", "swimming pool", "tennis court"):
                ring = np.zeros((size, size), bool)
                ring[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
                for bx0, by0, bx1, by1 in boxes:
                    ring[by0:by1, bx0:bx1] = False
                if ring.sum() >= 10:
                    assert np.linalg.norm(patch.reshape(-1, 3).mean(0) - image[ring].mean(0)) > 15, obj
                    checked.add(obj.label)
    assert "building" in checked


def test_captions_mention_only_objects_of_their_image_with_true_counts_and_colours(many_items):
    for scene, captions in many_items:
        labels = {o.label for o in scene.objects}
        pairs = {(o.label, o.color) for o in scene.objects}
        for caption in captions:
            text = caption.lower()
            for label in LABELS:
                if re.search(rf"\b{label}s?\b", text):
                    assert label in labels, (caption, labels)
            for color in PALETTE:
                for label in LABELS:
                    if re.search(rf"\b{color} {label}s?\b", text):
                        assert (label, color) in pairs, (caption, pairs)
            for number, color, label in COUNTED.findall(text):
                count = sum(o.label == label and (not color or o.color == color) for o in scene.objects)
                assert NUMBER_WORDS.index(number) + 1 == count, (caption, scene.objects)


def test_scenes_are_varied_and_every_image_has_an_object(many_items):
    assert {scene.background for scene, _ in many_items} == set(BACKGROUNDS)
    assert all(scene.objects for scene, _ in many_items)
    assert len({o.label for scene, _ in many_items for o in scene.objects}) >= 10
    captions = [c for _, caps in many_items for c in caps]
    assert len(set(captions)) > 0.8 * len(captions)
    assert any(" tennis court" in c or " storage tank" in c or " parking lot" in c for c in captions)


def test_image_size_option(tmp_path):
    options = SyntheticOptions(n_train=1, n_val=1, n_test=1, image_size=64)
    split = make_dataset(tmp_path, options).load_split("val")
    with Image.open(split.image_paths[0]) as image:
        assert image.size == (64, 64) and image.mode == "RGB"
    assert all(0 <= v <= 64 for obj in split.annotations["objects"][0] for v in obj["box"])


def test_different_seeds_give_disjoint_content(small_corpus, tmp_path):
    other_options = SyntheticOptions(n_train=6, n_val=3, n_test=3, seed=1000)
    other = generate(tmp_path / "other", other_options)
    images = lambda root: {d for name, d in file_digests(root).items() if name.endswith(".png")}  # noqa: E731
    assert not images(small_corpus) & images(other)
    assert corpus_key(other_options) != corpus_key(SMALL)
    seeds = {seed: {image_seed(seed, s, i) for s in ("train", "val", "test") for i in range(1000)}
             for seed in (0, 1, 1000)}
    assert len(seeds[0] | seeds[1] | seeds[1000]) == 3 * 3 * 1000


def test_unknown_split_raises_a_data_error_listing_valid_splits():
    dataset = make_dataset(None, SyntheticOptions(n_train=2, n_val=0, n_test=1))
    with pytest.raises(DataError, match="valid splits: train, test"):
        dataset.load_split("validation")
    with pytest.raises(DataError):
        dataset.load_split("val")


@pytest.mark.parametrize("bad", [{"n_train": -1}, {"n_train": 0, "n_val": 0, "n_test": 0}, {"image_size": 32},
                                 {"seed": "zero"}, {"seed": True}])
def test_invalid_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="Invalid dataset configuration"):
        build_section(SyntheticOptions, bad, "dataset")


def test_options_built_in_code_are_checked_before_a_corpus_is_made(tmp_path):
    with pytest.raises(ConfigError, match="image_size=32: must be at least 64"):
        make_dataset(tmp_path, SyntheticOptions(image_size=32))
    assert not any(tmp_path.iterdir())


def test_spec_builds_a_dataset():
    assert (SPEC.name, SPEC.factory, SPEC.options) == ("synthetic-rs", make_dataset, SyntheticOptions)
    assert isinstance(SPEC.factory(None, SyntheticOptions()), Dataset)


def test_a_leftover_partial_directory_is_ignored(tmp_path):
    target = tmp_path / "corpus"
    leftover = tmp_path / f".{target.name}.partial-crashed"
    (leftover / "images").mkdir(parents=True)
    (leftover / "images" / "train_00000.png").write_bytes(b"half a png")
    generate(target, SMALL)
    assert (target / ANNOTATION_FILE).is_file()
    assert len(list((target / "images").iterdir())) == 12
    assert (leftover / "images" / "train_00000.png").read_bytes() == b"half a png"


def test_a_directory_without_annotations_is_never_taken_as_complete(tmp_path):
    target = tmp_path / "corpus"
    (target / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="not a synthetic-rs corpus"):
        generate(target, SMALL)


def test_losing_the_race_keeps_the_winner_and_cleans_up(monkeypatch, tmp_path):
    """Another process publishes the corpus while this one is still writing its own copy."""
    target = tmp_path / "corpus"
    real_write = synthetic._write_corpus
    calls = []

    def write_then_lose(partial: Path, options: SyntheticOptions, recipe: synthetic.Recipe) -> None:
        calls.append(partial)
        real_write(partial, options, recipe)
        if len(calls) == 1:
            generate(target, options)  # the rival finishes first

    monkeypatch.setattr(synthetic, "_write_corpus", write_then_lose)
    assert generate(target, SMALL) == target
    assert len(calls) == 2
    assert (target / ANNOTATION_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_concurrent_generators_agree(tmp_path):
    target = tmp_path / "corpus"
    options = SyntheticOptions(n_train=3, n_val=1, n_test=1)
    errors = []

    def run():
        try:
            generate(target, options)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]
    assert file_digests(target) == file_digests(generate(tmp_path / "fresh", options))
