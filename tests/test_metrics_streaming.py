"""The streaming path equals the full-matrix path, stays within its memory bound and handles 16-bit input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from rsitr_bench.metrics import retrieval_metrics, streaming_retrieval_metrics


def _integer_embeddings(n_images, n_captions, dim=6, seed=0, duplicates=True):
    """Small-integer embeddings: every dot product is exact in float32, whatever the summation order, so
    the streaming and full paths must agree bit for bit, ties included."""
    rng = np.random.default_rng(seed)
    owners = np.concatenate([np.arange(n_images), rng.integers(0, n_images, n_captions - n_images)])
    owners = owners[rng.permutation(n_captions)]
    image_emb = rng.integers(-2, 3, size=(n_images, dim)).astype(np.float32)
    text_emb = rng.integers(-2, 3, size=(n_captions, dim)).astype(np.float32)
    captions = [f"caption {j}" for j in range(n_captions)]
    if duplicates:  # every 7th caption repeats an earlier one, with the identical embedding
        for j in range(7, n_captions, 7):
            text_emb[j] = text_emb[j // 3]
            captions[j] = captions[j // 3]
    return image_emb, text_emb, owners, captions


def _assert_same(a, b):
    assert a.metrics == b.metrics
    assert a.tied_queries == b.tied_queries
    np.testing.assert_array_equal(a.i2t_ranks, b.i2t_ranks)
    np.testing.assert_array_equal(a.t2i_ranks, b.t2i_ranks)
    for k in a.ks:
        np.testing.assert_array_equal(a.i2t_hits[k], b.i2t_hits[k])
        np.testing.assert_array_equal(a.t2i_hits[k], b.t2i_hits[k])


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "expected"])
@pytest.mark.parametrize("protocol", ["instance", "string-dedup"])
def test_streaming_equals_full_matrix_with_exact_ties(protocol, ties, chunk_size):
    image_emb, text_emb, owners, captions = _integer_embeddings(40, 130)
    kwargs = {"ks": (1, 5, 10), "protocol": protocol, "ties": ties, "captions": captions}
    full = retrieval_metrics(image_emb @ text_emb.T, owners, **kwargs)
    assert full.tied_queries["i2t"] > 0 and full.tied_queries["t2i"] > 0
    _assert_same(
        streaming_retrieval_metrics(image_emb, text_emb, owners, chunk_size=chunk_size, **kwargs), full
    )


def test_streaming_fixed5_and_float_embeddings():
    rng = np.random.default_rng(3)
    image_emb = rng.standard_normal((50, 16)).astype(np.float32)
    text_emb = rng.standard_normal((250, 16)).astype(np.float32)
    owners = np.repeat(np.arange(50), 5)
    full = retrieval_metrics(image_emb @ text_emb.T, owners, protocol="fixed-5")
    stream = streaming_retrieval_metrics(image_emb, text_emb, owners, protocol="fixed-5", chunk_size=32)
    _assert_same(stream, full)
    assert stream.protocol == "fixed-5"


def test_bfloat16_and_float16_embeddings_are_widened_exactly():
    """Values representable in 16 bits give exactly the float32 result: the product runs in float32."""
    image_emb, text_emb, owners, _ = _integer_embeddings(30, 90, duplicates=False)
    rng = np.random.default_rng(1)
    image_emb = image_emb * rng.choice([0.5, 0.25, 1.0], size=image_emb.shape).astype(np.float32)
    want = streaming_retrieval_metrics(image_emb, text_emb, owners, ties="expected", chunk_size=16)
    for dtype in (torch.bfloat16, torch.float16):
        got = streaming_retrieval_metrics(
            torch.from_numpy(image_emb).to(dtype), torch.from_numpy(text_emb).to(dtype), owners,
            ties="expected", chunk_size=16,
        )  # fmt: skip
        _assert_same(got, want)
    got = streaming_retrieval_metrics(image_emb.astype(np.float16), text_emb.astype(np.float16), owners)
    assert got.metrics == streaming_retrieval_metrics(image_emb, text_emb, owners).metrics


def _margin_to_best_positive(scores, positives):
    """Per query (row): distance from the best positive's score to the nearest negative score."""
    best = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)
    return np.where(positives, np.inf, np.abs(scores - best)).min(axis=1)


@pytest.mark.parametrize("dtype, unit_roundoff", [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)])
def test_half_precision_ranks_equal_float32_when_scores_are_well_separated(dtype, unit_roundoff):
    """Rounding unit-norm embeddings moves a cosine by at most b = 2u + u^2 (+ float32 summation error).
    A query whose nearest negative is more than 2b from its best positive cannot change rank."""
    rng = np.random.default_rng(7)
    n_images, dim = 60, 32
    owners = np.repeat(np.arange(n_images), 4)
    image_emb = rng.standard_normal((n_images, dim))
    text_emb = image_emb[owners] + 1.2 * rng.standard_normal((len(owners), dim))
    image_emb /= np.linalg.norm(image_emb, axis=1, keepdims=True)
    text_emb /= np.linalg.norm(text_emb, axis=1, keepdims=True)
    image_emb, text_emb = image_emb.astype(np.float32), text_emb.astype(np.float32)
    bound = 2 * unit_roundoff + unit_roundoff**2 + 1e-5
    want = streaming_retrieval_metrics(image_emb, text_emb, owners)
    got = streaming_retrieval_metrics(
        torch.from_numpy(image_emb).to(dtype), torch.from_numpy(text_emb).to(dtype), owners
    )
    scores, positives = image_emb @ text_emb.T, np.zeros((n_images, len(owners)), dtype=bool)
    positives[owners, np.arange(len(owners))] = True
    for ranks_got, ranks_want, s, p in (
        (got.i2t_ranks, want.i2t_ranks, scores, positives),
        (got.t2i_ranks, want.t2i_ranks, scores.T, positives.T),
    ):
        separated = _margin_to_best_positive(s, p) > 2 * bound
        assert separated.sum() >= len(s) // 4  # the property is exercised on many queries
        np.testing.assert_array_equal(ranks_got[separated], ranks_want[separated])


def test_streaming_peak_memory_is_bounded_by_the_tile_not_the_gallery():
    rng = np.random.default_rng(0)
    n_images, n_captions, dim = 1000, 5000, 16
    image_emb = rng.standard_normal((n_images, dim)).astype(np.float32)
    text_emb = rng.standard_normal((n_captions, dim)).astype(np.float32)
    owners = np.repeat(np.arange(n_images), 5)
    full_matrix_bytes = n_images * n_captions * 4  # 20 MB
    tracemalloc.start()
    streaming_retrieval_metrics(image_emb, text_emb, owners, chunk_size=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # a 256 x 256 tile is 256 KiB; counters and per-query outputs are O(n_images + n_captions)
    assert peak < full_matrix_bytes / 15, peak


def test_streaming_bad_input_names_the_problem():
    image_emb, text_emb, owners, _ = _integer_embeddings(10, 30)
    with pytest.raises(ValueError, match=r"image_emb.shape\[1\] = 6 but text_emb.shape\[1\] = 5"):
        streaming_retrieval_metrics(image_emb, text_emb[:, :5], owners)
    with pytest.raises(ValueError, match=r"empty gallery: 0 image"):
        streaming_retrieval_metrics(image_emb[:0], text_emb, owners)
    bad = text_emb.copy()
    bad[23, 4] = np.nan
    with pytest.raises(ValueError, match=r"text_emb\[23, 4\] is NaN"):
        streaming_retrieval_metrics(image_emb, bad, owners, chunk_size=8)
    with pytest.raises(ValueError, match=r"caption_image\[3\] = 10 is out of range for 10 images"):
        streaming_retrieval_metrics(image_emb, text_emb, np.where(np.arange(30) == 3, 10, owners))
    with pytest.raises(ValueError, match=r"chunk_size = 0"):
        streaming_retrieval_metrics(image_emb, text_emb, owners, chunk_size=0)
    with pytest.raises(ValueError, match=r"text_emb has dtype int64"):
        streaming_retrieval_metrics(image_emb, text_emb.astype(np.int64), owners)
    huge = np.full((10, 6), 1e30, dtype=np.float32)
    with pytest.raises(ValueError, match=r"the score of image 0 and caption 0 overflows to inf"):
        streaming_retrieval_metrics(huge, np.abs(text_emb) + 1e30, owners)
