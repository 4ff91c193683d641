"""The feature cache never hands back features of another batching than the one asked for.

Encoding in batches of 1, 7 and 64 may differ in the last float32 bit (a batched matrix product depends on
its row count), so each batching is cached apart; the default batch size keeps the key it always had.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsitr_bench.clip.backbones import build_backbone
from rsitr_bench.clip.features import DEFAULT_BATCH_SIZE, FeatureCache, cache_key, encode_images, encode_texts
from rsitr_bench.data.model import Split
from rsitr_bench.harness.store import file_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOG = logging.getLogger("test")
N = 70  # more than the default batch, so 64 encodes two batches (64 + 6) and 7 ten


@pytest.fixture(scope="module")
def tiny():
    return build_backbone("rsitr-tiny", init_seed=0)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Split:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[-1])
    captions = [f"{i} storage tanks beside a river, {i * i} trees" for i in range(N)]
    return Split("synthetic", "test", [p.name for p in paths], paths, captions, np.arange(N))


def _encode(tiny, split: Split, cache: FeatureCache, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    return (encode_images(tiny, split, cache, LOG, batch_size, progress=False),
            encode_texts(tiny, split.captions, cache, LOG, batch_size, progress=False))


@pytest.mark.slow
def test_batches_of_1_7_and_64_read_back_exactly_what_they_encode(tiny, split, tmp_path):
    fresh = {bs: _encode(tiny, split, FeatureCache(tmp_path / f"alone-{bs}"), bs) for bs in (1, 7, 64)}
    shared = FeatureCache(tmp_path / "shared")
    for bs in (1, 7, 64):
        _encode(tiny, split, shared, bs)
    for bs in (1, 7, 64):  # the second pass reads every array from the shared cache
        for cached, encoded in zip(_encode(tiny, split, shared, bs), fresh[bs], strict=True):
            assert cached.dtype == encoded.dtype and cached.tobytes() == encoded.tobytes(), bs
    assert len(list((tmp_path / "shared").rglob("*.npy"))) == 6  # images and texts, three batchings each


def test_the_default_batch_size_keeps_its_historical_keys(tiny, split, tmp_path):
    cache = FeatureCache(tmp_path)
    images, texts = _encode(tiny, split, cache, DEFAULT_BATCH_SIZE)
    # The keys every run recorded before batch sizes were keyed used: runs on the default keep their features.
    image_key = cache_key("image", tiny.identity, repr(tiny.preprocess), [file_sha256(p) for p in split.image_paths])
    text_key = cache_key("text", tiny.identity, list(split.captions))
    assert np.array_equal(cache.get(image_key), images) and np.array_equal(cache.get(text_key), texts)


def test_batch_sizes_that_give_the_same_batches_share_an_entry(tiny, split, tmp_path):
    small = Split(split.dataset, "few", split.image_names[:5], split.image_paths[:5], split.captions[:5],
                  np.arange(5))
    cache = FeatureCache(tmp_path)
    for bs in (DEFAULT_BATCH_SIZE, 5, 1000):  # five inputs: one batch of five, whatever the batch size
        _encode(tiny, small, cache, bs)
    assert len(list(Path(tmp_path).rglob("*.npy"))) == 2
