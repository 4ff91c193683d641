"""What batch-invariant encoding would cost: ``rsitr-tiny`` encoding 70 images alone vs in batches of 64.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_features.py --benchmark-only``.
Encoding every input alone is the one way to features that do not depend on the batch size; the feature
cache keys the batch size instead (see :mod:`rsitr_bench.clip.features`), and this measures why. Each round
encodes into an empty cache, so the time is the encoding (images read and preprocessed included).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsitr_bench.clip.backbones import build_backbone
from rsitr_bench.clip.features import FeatureCache, encode_images
from rsitr_bench.data.model import Split

N = 70


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    split = Split("synthetic", "test", [p.name for p in paths], paths, [str(i) for i in range(N)], np.arange(N))
    return build_backbone("rsitr-tiny", init_seed=0), split


@pytest.mark.parametrize("batch_size", [1, 64])
def test_encode_images(benchmark, setup, batch_size):
    backbone, split = setup
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more, and two threads thrash on a busy host
    try:
        def encode() -> np.ndarray:
            with tempfile.TemporaryDirectory() as folder:
                return encode_images(backbone, split, FeatureCache(Path(folder)), logging.getLogger("bench"),
                                     batch_size, progress=False)

        feats = benchmark.pedantic(encode, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
    assert feats.shape[0] == N
