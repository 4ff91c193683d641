"""The ``rules`` and ``vocabulary`` keyword providers, the lexicon, and the keyword cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.lexicon import (
    OBJECT_NOUNS,
    Lexicon,
    normalize_keyword,
    plural,
    rank_keywords,
    singular,
)
from rsitr_bench.keywords.rules import RulesOptions, build_lexicon
from rsitr_bench.keywords.vocabulary import VocabularyOptions, build_vocabulary, rank_vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RULES = build_lexicon(RulesOptions())


def test_multi_word_nouns_and_plurals_are_found_whole():
    caption = "Two tennis courts are next to three storage tanks, a parking lot and some basketball courts."
    assert RULES.find(caption) == ["tennis court", "storage tank", "parking lot", "basketball court"]


def test_stop_nouns_and_non_objects_are_not_keywords():
    assert RULES.find("The area on the left side is a part with a red color and a door.") == []
    assert normalize_keyword("Area") == "" and normalize_keyword("sides") == ""
    assert normalize_keyword("  Tennis_Courts. ") == "tennis court"


@pytest.mark.parametrize("word, single", [
    ("trees", "tree"), ("churches", "church"), ("boxes", "box"), ("ferries", "ferry"), ("buses", "bus"),
    ("glasses", "glass"), ("houses", "house"), ("grass", "grass"), ("aircraft", "aircraft"),
    ("leaves", "leaf"), ("overpasses", "overpass"), ("status", "status")])
def test_singular(word, single):
    assert singular(word) == single


@pytest.mark.parametrize("noun", sorted({n.split()[-1] for n in OBJECT_NOUNS}))
def test_every_lexicon_noun_round_trips_through_its_plural(noun):
    assert singular(plural(noun)) == noun


def test_longest_match_wins_and_extra_nouns_extend_the_lexicon():
    lexicon = build_lexicon(RulesOptions(extra_nouns=["Solar Farms"], stop_nouns=["bridge"]))
    assert lexicon.find("a bridge over two solar farms near a ground track field") == [
        "solar farm", "ground track field"]
    assert Lexicon(["court", "tennis court"]).find("tennis courts and a court") == ["tennis court", "court"]


def test_rank_keywords_counts_captions_then_first_appearance():
    ranked = rank_keywords([["road", "tree", "road"], ["tree"], ["building", "tree"], ["building"]])
    assert ranked == ["tree", "building", "road"]


def test_rules_keywords_name_objects_of_their_own_image(make_service, corpus, backbone_fn):
    """synthetic-rs captions are written from the ground truth: every keyword must be one of its objects."""
    result = make_service().perspectives(corpus["train"], keywords="rules", generator="grid",
                                         backbone=backbone_fn, max_per_image=10)
    assert result.role == "query" and result.split_role == "train"
    assert sum(bool(k) for k in result.keywords) >= len(result.keywords) - 1
    for index, keywords in zip(result.indices, result.keywords):
        labels = {o["label"] for o in corpus["train"].annotations["objects"][index]}
        assert set(keywords) <= labels, (index, keywords, labels)


def test_keywords_are_cached_per_caption_and_invalidated_by_options(make_service, corpus, backbone_fn):
    service = make_service()
    n_captions = corpus["train"].n_captions
    first = service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn)
    assert first.stats["keyword_cache_misses"] == n_captions and first.stats["keyword_cache_hits"] == 0
    again = service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn)
    assert again.stats["keyword_cache_hits"] == n_captions and again.stats["keyword_cache_misses"] == 0
    assert again.keywords == first.keywords
    other = service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn,
                                 keyword_options={"extra_nouns": ["solar farm"]})
    assert other.stats["keyword_cache_misses"] == n_captions


def test_corrupt_keyword_entry_is_detected_and_recomputed(make_service, corpus, backbone_fn, tmp_path):
    service = make_service()
    first = service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn)
    entries = sorted((tmp_path / "cache" / "keywords").rglob("*.json"))
    entries[0].write_text(entries[0].read_text()[:-7])  # truncated
    entry = json.loads(entries[1].read_text())
    entry["payload"] = ["swimming pool"]  # altered: its checksum no longer matches
    entries[1].write_text(json.dumps(entry))
    again = make_service().perspectives(corpus["train"], keywords="rules", generator="grid",
                                        backbone=backbone_fn)
    assert again.stats["corrupt_cache_entries"] == 2
    assert again.keywords == first.keywords


def test_empty_captions_are_counted_and_give_no_keywords(guidance_host, corpus, tmp_path, backbone_fn):
    from rsitr_bench.guidance.service import GuidanceService

    train = corpus["train"]
    split = Split("synthetic-rs", "train", train.image_names[:2], train.image_paths[:2],
                  ["", "   ", "A storage tank.", ""], np.array([0, 0, 1, 1]))
    service = GuidanceService(guidance_host, {"train": split}, LeakageAudit(), tmp_path, progress=False)
    result = service.perspectives(split, keywords="rules", generator="grid", backbone=backbone_fn)
    assert result.keywords == [[], ["storage tank"]]
    assert result.stats["empty_captions"] == 3 and result.stats["no_keywords"] == 1
    assert result.perspectives[1] and result.perspectives[0]  # grid needs no keywords


def test_vocabulary_comes_from_training_captions_only():
    captions = ["two planes and a storage tank", "a plane", "storage tanks near a road", "one ship"]
    assert build_vocabulary(captions, VocabularyOptions(min_count=2)) == ["plane", "storage tank"]
    assert build_vocabulary(captions, VocabularyOptions(min_count=1, max_size=3)) == [
        "plane", "storage tank", "road"]


def test_rank_vocabulary_is_top_k_with_stable_ties_and_threshold():
    sims = np.array([0.1, 0.5, 0.5, 0.3])
    assert rank_vocabulary(sims, 3, None) == [1, 2, 3]
    assert rank_vocabulary(sims, 3, 0.4) == [1, 2]


def test_vocabulary_picks_the_most_similar_words_without_reading_gallery_captions(
        make_service, corpus, backbone_fn, tiny_backbone):
    audit = LeakageAudit()
    result = make_service(audit).perspectives(corpus["test"], keywords="vocabulary", generator="grid",
                                              backbone=backbone_fn)
    assert result.role == "gallery"
    assert audit.stamp()["status"] == "pass" and audit.reads == 0

    vocabulary = build_vocabulary(corpus["train"].captions, VocabularyOptions())
    model, template = tiny_backbone.model, VocabularyOptions().template
    with torch.inference_mode():
        tokens = tiny_backbone.tokenizer([template.format(w) for w in vocabulary])
        text = F.normalize(model.encode_text(tokens), dim=-1)
        for index, keywords in zip(result.indices, result.keywords):
            pixels = tiny_backbone.preprocess(load_rgb(corpus["test"].image_paths[index]))[None]
            image = F.normalize(model.encode_image(pixels), dim=-1)[0]
            expected = [vocabulary[i] for i in np.argsort(-(text @ image).numpy(), kind="stable")[:4]]
            assert keywords == expected


def test_vocabulary_without_training_captions_uses_the_builtin_lexicon(guidance_host, corpus, tmp_path,
                                                                       backbone_fn):
    from rsitr_bench.guidance.service import GuidanceService

    service = GuidanceService(guidance_host, {"test": corpus["test"]}, LeakageAudit(), tmp_path,
                              progress=False)
    result = service.perspectives(corpus["test"], keywords="vocabulary", generator="grid",
                                  backbone=backbone_fn, keyword_options={"top_k": 2})
    assert result.stats["vocabulary_builtin"] == 1
    assert all(len(k) == 2 and set(k) <= set(RULES.nouns) for k in result.keywords)
