"""The guidance service: roles by identity, the leakage guard, bad input, and cache reuse/invalidation."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

import rsitr_bench.keywords
import rsitr_bench.perspectives
from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.data.model import Split
from rsitr_bench.errors import ConfigError, UnknownPluginError
from rsitr_bench.guidance.context import LeakageAudit, Perspective
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.store import digest
from rsitr_bench.hookspecs import hookimpl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CALLS: Counter = Counter()


@dataclass
class StubOptions:
    mode: str = "none"


class StubGenerator:
    """``none``: finds nothing; ``bad``: returns one good perspective among malformed ones."""

    def __init__(self, options: StubOptions, env):
        self.mode = options.mode
        self.identity = f"stub/{options.mode}"

    def generate(self, item, keywords):
        CALLS[item.index] += 1
        if self.mode == "none":
            return []
        wrong_size = np.ones((5, 5), bool)
        first = keywords[0]
        return [Perspective("not-asked", (0, 0, 10, 10)), Perspective(first, (0, 0, 10, 10), 1.0, wrong_size),
                Perspective(first, (500, 500, 600, 600)), Perspective(first, (-5, 2, 20, 300), 0.5),
                Perspective(first, (1, 1, 2, 2)), "junk"]


class StubPlugin:
    @hookimpl
    def rsitr_register_perspective_generators(self):
        return [PerspectiveGeneratorSpec(name="stub", factory=StubGenerator, options=StubOptions)]


@pytest.fixture
def stub_service(corpus, tmp_path):
    host = build_plugin_host(extra_plugins=[("keywords", rsitr_bench.keywords), ("stub", StubPlugin()),
                                            ("perspectives", rsitr_bench.perspectives)])
    CALLS.clear()
    return GuidanceService(host, corpus, LeakageAudit(), tmp_path / "cache", progress=False)


def test_roles_come_from_object_identity(make_service, corpus):
    service = make_service()
    assert service.role_of(corpus["train"]) == ("train", "query")
    assert service.role_of(corpus["val"]) == ("val", "gallery")
    assert service.role_of(corpus["test"]) == ("test", "gallery")
    test = corpus["test"]
    copy = Split(test.dataset, test.name, test.image_names, test.image_paths, test.captions,
                 test.caption_image)
    with pytest.raises(ValueError, match="none of this run's"):
        service.role_of(copy)


def test_guard_refuses_gallery_captions_and_the_run_goes_on_stamped_fail(make_service, corpus,
                                                                          backbone_fn):
    audit = LeakageAudit()
    result = make_service(audit).perspectives(corpus["test"], keywords="rules", generator="grid",
                                              backbone=backbone_fn)
    assert result.role == "gallery" and result.keywords == [[]] * corpus["test"].n_images
    assert result.stats["refused_caption_reads"] == corpus["test"].n_images
    assert all(len(p) == 4 for p in result.perspectives)  # grid needs no keywords: the run continued
    stamp = audit.stamp()
    assert stamp["status"] == "fail" and stamp["refused_reads"] == corpus["test"].n_images
    assert "test_00000.png" in stamp["first"]


def test_compliant_default_passes(make_service, corpus, backbone_fn):
    audit = LeakageAudit()
    service = make_service(audit)
    train = service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn)
    for role in ("val", "test"):
        service.perspectives(corpus[role], keywords="vocabulary", generator="grid", backbone=backbone_fn)
    stamp = audit.stamp()
    assert stamp["status"] == "pass" and stamp["caption_reads"] == len(train.indices)


def test_as_published_reads_are_granted_but_stamped(make_service, corpus, backbone_fn):
    audit = LeakageAudit(allow_leak=True)
    result = make_service(audit).perspectives(corpus["test"], keywords="rules", generator="grid",
                                              backbone=backbone_fn)
    assert all(result.keywords) and result.stats["refused_caption_reads"] == 0
    assert audit.stamp()["status"] == "fail (as published)"


def test_nothing_detected_is_recorded_counted_and_not_recomputed(stub_service, corpus, backbone_fn):
    train = corpus["train"]
    first = stub_service.perspectives(train, keywords="rules", generator="stub", backbone=backbone_fn)
    assert first.perspectives == [[]] * train.n_images
    with_keywords = sum(bool(k) for k in first.keywords)
    assert first.stats["nothing_detected"] == with_keywords
    assert first.stats["keywords_unmatched"] == sum(len(k) for k in first.keywords)
    assert sum(CALLS.values()) == with_keywords
    again = stub_service.perspectives(train, keywords="rules", generator="stub", backbone=backbone_fn)
    assert again.stats["perspective_cache_hits"] == with_keywords and sum(CALLS.values()) == with_keywords
    assert again.stats["nothing_detected"] == 0  # counted when found, not again from the cache


def test_malformed_perspectives_are_dropped_never_borrowed(stub_service, corpus, backbone_fn):
    result = stub_service.perspectives(corpus["train"], keywords="rules", generator="stub",
                                       backbone=backbone_fn, generator_options={"mode": "bad"}, indices=[0])
    keyword = result.keywords[0][0]
    assert result.perspectives[0] == [Perspective(keyword, (0, 2, 20, 128), 0.5)]  # clipped to the image
    # dropped: unknown keyword, mask of another size, box outside the image, second box of a keyword, junk
    assert result.stats["invalid_perspectives"] == 5
    assert result.stats["keywords_unmatched"] == len(result.keywords[0]) - 1


def test_corrupt_perspective_entry_is_recomputed(make_service, corpus, backbone_fn, tmp_path):
    first = make_service().perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                        backbone=backbone_fn, indices=[0, 1])
    entries = sorted((tmp_path / "cache" / "perspectives").rglob("*.json"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:40])
    entry = json.loads(entries[1].read_text())
    entry["payload"]["image"] = "0" * 64  # a well-formed entry of another image under this key
    entry["sha256"] = digest(entry["payload"])
    entries[1].write_text(json.dumps(entry))
    again = make_service().perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                        backbone=backbone_fn, indices=[0, 1])
    assert again.stats["corrupt_cache_entries"] == 2 and again.stats["generator_calls"] == 2
    assert again.perspectives == first.perspectives


def test_changed_image_bytes_invalidate_only_that_image(guidance_host, corpus, backbone_fn, tmp_path):
    train = corpus["train"]
    folder = tmp_path / "copy"
    folder.mkdir()
    paths = [folder / name for name in train.image_names[:3]]
    for src, dst in zip(train.image_paths, paths):
        shutil.copy(src, dst)
    split = Split(train.dataset, "train", train.image_names[:3], paths,
                  [train.captions[j] for i in range(3) for j in train.captions_of(i)],
                  np.repeat(np.arange(3), [len(train.captions_of(i)) for i in range(3)]))

    def run():
        service = GuidanceService(guidance_host, {"train": split}, LeakageAudit(), tmp_path / "cache",
                                  progress=False)
        return service.perspectives(split, keywords="rules", generator="clip-saliency", backbone=backbone_fn)

    assert run().stats["generator_calls"] == 3
    pixels = np.asarray(Image.open(paths[1])).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(paths[1])
    again = run()
    assert again.stats["generator_calls"] == 1 and again.stats["perspective_cache_hits"] == 2


def test_options_are_validated_and_names_checked(make_service, corpus, backbone_fn):
    service = make_service()
    with pytest.raises(ConfigError, match="perspectives.rowz"):
        service.perspectives(corpus["train"], keywords="rules", generator="grid", backbone=backbone_fn,
                             generator_options={"rowz": 3})
    with pytest.raises(ConfigError, match="top_k"):
        service.perspectives(corpus["test"], keywords="vocabulary", generator="grid", backbone=backbone_fn,
                             keyword_options={"top_k": 0})
    with pytest.raises(UnknownPluginError, match="clip-saliency"):
        service.perspectives(corpus["train"], keywords="rules", generator="sam3", backbone=backbone_fn)


def test_cap_masks_and_config_stamp(make_service, corpus, backbone_fn):
    result = make_service().perspectives(corpus["train"], keywords="rules", generator="clip-saliency",
                                         backbone=backbone_fn, max_per_image=1, with_masks=False)
    assert all(len(k) <= 1 and len(p) <= 1 for k, p in zip(result.keywords, result.perspectives))
    assert all(p.mask is None for ps in result.perspectives for p in ps)
    assert result.config["perspectives"]["name"] == "clip-saliency" and result.config["keyword_guided"]
    assert result.config["keywords"] == {"name": "rules", "extra_nouns": [], "scene_nouns": False,
                                         "stop_nouns": []}


def test_backbone_and_plugins_are_built_once_per_run(make_service, corpus, tiny_backbone):
    builds = []

    class Method:
        def guidance_backbone(self):
            builds.append(1)
            return tiny_backbone

    method, service = Method(), make_service()
    for role in ("val", "test"):  # a bound method is a new object at every access
        service.perspectives(corpus[role], keywords="vocabulary", generator="clip-saliency",
                             backbone=method.guidance_backbone)
    assert len(builds) == 1 and len(service._plugins) == 2
