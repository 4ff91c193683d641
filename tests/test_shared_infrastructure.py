"""The core's one-of-each helpers: cache keys that keep their bytes, one device resolver, one seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rsitr_bench.clip.features import FeatureCache, cache_key
from rsitr_bench.guidance.perspective_cache import PerspectiveCache
from rsitr_bench.harness import environment
from rsitr_bench.harness.store import SPACED, CheckedStore, digest


def test_cache_keys_keep_the_bytes_of_the_keys_already_on_disk():
    # Values computed with the stores' former private hash functions: a change here orphans users' caches.
    assert digest("image-keywords", "vocab", "é", {"b": 1, "a": [1.5, None]}) == (
        "f97bc422f04d7eb93c978aadd4efa3d51e35970385029feca1c5240801064713")
    assert cache_key("text", "RN50 sha256=x", ["a satellite image of é.", "two"]) == (
        "1a6a83c72bfc368821e27db751560d99aa799951bcc63f1ea66d18d21dd2a907")
    assert PerspectiveCache.key("ab" * 32, ["tennis court", "tree"], "grid-identity") == (
        "292c46e060e49359e8c3bd3d9fdd4c61b81b40696aed0f346fb9553ffb8d4ac1")
    assert digest("x", "é") != digest("x", "é", encoding=SPACED)


def test_every_store_discards_an_entry_it_cannot_read(tmp_path):
    features = FeatureCache(tmp_path)
    features.put("ab12", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert features.get("ab12").tolist() == [[0, 1, 2], [3, 4, 5]]
    features.path("ab12").write_bytes(b"not an array")
    assert features.get("ab12") is None and not features.path("ab12").exists()

    checked = CheckedStore(tmp_path, "keywords", "keyword")
    checked.put("cd34", ["tree"])
    checked.path("cd34").write_text('{"sha256": "0", "payload": ["tree"]}', encoding="utf-8")
    assert checked.get("cd34") is None and not checked.path("cd34").exists()
    assert checked.counters["corrupt_cache_entries"] == 1


@pytest.mark.parametrize("local_rank, expected", [(None, "cuda"), ("1", "cuda:1")])
def test_auto_device_is_this_ranks_gpu_under_torchrun(monkeypatch, local_rank, expected):
    monkeypatch.setattr(environment, "available_devices", lambda: ["cpu", "cuda", "cuda:0", "cuda:1"])
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert environment.resolve_device("auto") == expected


def test_auto_device_without_a_gpu_is_the_cpu(monkeypatch):
    monkeypatch.setattr(environment, "available_devices", lambda: ["cpu"])
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert environment.resolve_device("auto") == "cpu"


def test_seeding_repeats_python_numpy_and_torch_draws():
    def draws(seed: int) -> tuple:
        environment.seed_everything(seed)
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    assert draws(3) == draws(3) and draws(3) != draws(4)
    assert draws(2**32 + 3)[1] == draws(3)[1]  # NumPy takes the seed modulo its 32-bit range
