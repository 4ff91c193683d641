"""Shared fixtures of the keyword, perspective and guidance tests (no tests here).

A small synthetic-rs corpus (with ground-truth object boxes), the plugin host with the built-in keyword
providers and perspective generators, and the tiny random ``rsitr-tiny`` backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rsitr_bench.keywords
import rsitr_bench.perspectives
from rsitr_bench.backbones import Backbone, build_backbone
from rsitr_bench.data.model import Split
from rsitr_bench.datasets.synthetic import SyntheticOptions, make_dataset
from rsitr_bench.guidance import LeakageAudit
from rsitr_bench.guidance_service import GuidanceService
from rsitr_bench.plugins import PluginHost, build_plugin_host

SMALL = SyntheticOptions(n_train=8, n_val=3, n_test=4)
#: The fixtures; test modules take them with ``from tests.test_guidance_helpers import *``.
__all__ = ["backbone_fn", "corpus", "guidance_host", "make_service", "one_torch_thread", "tiny_backbone"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: tiny models gain nothing from more, and the 2 shared cores thrash with them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def guidance_host() -> PluginHost:
    return build_plugin_host(extra_plugins=[("keywords", rsitr_bench.keywords),
                                            ("perspectives", rsitr_bench.perspectives)])


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Split]:
    """The train/val/test splits of a small synthetic-rs corpus (fresh Split objects per session)."""
    dataset = make_dataset(tmp_path_factory.mktemp("synthetic"), SMALL)
    return {role: dataset.load_split(role) for role in ("train", "val", "test")}


@pytest.fixture(scope="session")
def tiny_backbone() -> Backbone:
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        return build_backbone("rsitr-tiny")
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture
def backbone_fn(tiny_backbone) -> Callable[[], Backbone]:
    return lambda: tiny_backbone


@pytest.fixture
def make_service(guidance_host, corpus, tmp_path) -> Callable[..., GuidanceService]:
    """``make_service(audit=None, cache=None)``: a service over the corpus with a per-test cache."""

    def make(audit: LeakageAudit | None = None, cache: Path | None = None) -> GuidanceService:
        return GuidanceService(guidance_host, corpus, audit or LeakageAudit(), cache or tmp_path / "cache",
                               "cpu", logging.getLogger("test.guidance"), progress=False)

    return make


def gt_boxes(split: Split, index: int, label: str) -> list[tuple[int, int, int, int]]:
    """Ground-truth boxes of the objects named ``label`` in one synthetic-rs image."""
    return [tuple(o["box"]) for o in split.annotations["objects"][index] if o["label"] == label]


def oracle_similarity(split: Split, index: int, keywords: list[str]) -> Callable:
    """A patch-text similarity that is 1 on the patches of the keyword's ground-truth objects, else 0.

    It stands in for a CLIP that localises perfectly, so tests check the geometry from map to pixel box.
    """

    def similarity(backbone, image, text, tokens) -> np.ndarray:
        grid = backbone.model.visual.grid_size
        width, height = image.size
        maps = np.zeros((len(keywords), *grid))
        for k, keyword in enumerate(keywords):
            for x0, y0, x1, y1 in gt_boxes(split, index, keyword)[:1]:
                maps[k, int(y0 * grid[0] / height):int(np.ceil(y1 * grid[0] / height)),
                     int(x0 * grid[1] / width):int(np.ceil(x1 * grid[1] / width))] = 1.0
        return maps

    return similarity


def box_contains(outer: tuple, inner: tuple) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]
