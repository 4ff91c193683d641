"""The streaming path equals the full-matrix path, stays within its memory bound and handles 16-bit input; its
torch path (what runs on a GPU) and the device counters give exactly the NumPy kernel's counts, here on the CPU."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from rsitr_bench.metrics import retrieval_metrics, streaming_retrieval_metrics
from rsitr_bench.metrics.device import count_matrix, full_float32, resolve
from rsitr_bench.metrics.kernel import build_result
from rsitr_bench.metrics.protocols import build_layout
from rsitr_bench.metrics.streaming import _streaming, cannot_overflow

TORCH_CPU = torch.device("cpu")  # the torch (GPU) path, run on the CPU


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
    streaming_retrieval_metrics(image_emb, text_emb, owners, chunk_size=256, device="cpu")
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


def _torch_path(image_emb, text_emb, owners, ks=(1, 5, 10), protocol="instance", ties="optimistic", chunk_size=None,
                captions=None):
    return _streaming(image_emb, text_emb, owners, ks, protocol, ties, chunk_size, captions, TORCH_CPU)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("chunk_size", [pytest.param(3, marks=pytest.mark.slow), 64, 10_000])  # 3: 598 tiles
@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "expected"])
@pytest.mark.parametrize("protocol", ["instance", "string-dedup"])
def test_device_path_equals_numpy_path_with_exact_ties(protocol, ties, chunk_size):
    """The tiles, column merging and counters that run on a GPU, run on the CPU: the same ranks, ties included."""
    image_emb, text_emb, owners, captions = _integer_embeddings(40, 130)
    kwargs = {"ks": (1, 5, 10), "protocol": protocol, "ties": ties, "captions": captions}
    want = streaming_retrieval_metrics(image_emb, text_emb, owners, chunk_size=chunk_size, device="cpu", **kwargs)
    assert want.tied_queries["i2t"] > 0 and want.tied_queries["t2i"] > 0
    _assert_same(want, retrieval_metrics(image_emb @ text_emb.T, owners, **kwargs))
    _assert_same(_torch_path(image_emb, text_emb, owners, chunk_size=chunk_size, **kwargs), want)
    for as_tensor in (False, True):  # torch tensors are the usual input of the device path
        emb = (torch.from_numpy(image_emb), torch.from_numpy(text_emb)) if as_tensor else (image_emb, text_emb)
        _assert_same(_torch_path(*emb, owners, chunk_size=chunk_size, **kwargs), want)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("protocol", ["instance", "string-dedup", "fixed-5"])
def test_device_counters_of_a_whole_matrix_equal_the_numpy_kernel(protocol):
    """``retrieval_metrics`` of a GPU tensor counts with these counters; on a CPU tensor they must agree exactly."""
    image_emb, text_emb, owners, captions = _integer_embeddings(40, 200 if protocol == "fixed-5" else 130)
    if protocol == "fixed-5":
        owners = np.repeat(np.arange(40), 5)
    scores = image_emb @ text_emb.T
    layout = build_layout(protocol, owners, len(image_emb), captions)
    for ties in ("optimistic", "expected"):
        want = retrieval_metrics(scores, owners, protocol=protocol, ties=ties, captions=captions)
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int32):  # integer scores: exact in all
            rows, cols = count_matrix(torch.from_numpy(scores).to(dtype), layout)
            _assert_same(build_result(layout, rows, cols, (1, 5, 10), protocol, ties), want)


@pytest.mark.usefixtures("one_torch_thread")
def test_device_path_widens_16_bit_embeddings_and_names_bad_input():
    image_emb, text_emb, owners, _ = _integer_embeddings(30, 90, duplicates=False)
    want = streaming_retrieval_metrics(image_emb, text_emb, owners, ties="expected", chunk_size=16, device="cpu")
    for dtype in (torch.bfloat16, torch.float16):
        got = _torch_path(torch.from_numpy(image_emb).to(dtype), torch.from_numpy(text_emb).to(dtype), owners,
                          ties="expected", chunk_size=16)
        _assert_same(got, want)
    bad = text_emb.copy()
    bad[23, 4] = np.nan
    with pytest.raises(ValueError, match=r"text_emb\[23, 4\] is NaN"):
        _torch_path(image_emb, bad, owners, chunk_size=8)
    huge = np.full((30, 6), 1e30, dtype=np.float32)
    with pytest.raises(ValueError, match=r"the score of image 0 and caption 0 overflows to inf"):
        _torch_path(huge, np.abs(text_emb) + 1e30, owners)
    scores = torch.from_numpy(image_emb @ text_emb.T)
    scores[3, 7] = -torch.inf
    with pytest.raises(ValueError, match=r"similarity\[3, 7\] is -inf"):
        count_matrix(scores, build_layout("instance", owners, 30, None))


def test_device_resolution_and_full_float32_matmuls():
    cpu_inputs = (np.zeros((2, 3), np.float32), torch.zeros(2, 3))
    assert resolve("auto", *cpu_inputs) == (torch.device("cuda") if torch.cuda.is_available() else TORCH_CPU)
    assert resolve("cpu") == TORCH_CPU and resolve(torch.device("cuda", 1)) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device = 'gpu' is not a torch device"):
        streaming_retrieval_metrics(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), [0, 1], device="gpu")
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # what training sets on CUDA (TF32)
    try:
        with full_float32():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_overflow_bound_skips_the_tile_check_only_when_no_product_can_overflow():
    assert cannot_overflow(1.0, 1.0, 512, np.dtype(np.float32))
    assert cannot_overflow(1e18, 1e18, 512, np.dtype(np.float32))  # 1e36 < 3.4e38 / 2
    assert not cannot_overflow(1.5e19, 1.5e19, 512, np.dtype(np.float32))  # 2 * 2.25e38 > 3.4e38
    assert cannot_overflow(1.5e19, 1.5e19, 512, np.dtype(np.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU tests above cover the logic)")
def test_on_cuda_the_streaming_path_and_the_device_kernel_give_the_cpu_ranks():
    image_emb, text_emb, owners, captions = _integer_embeddings(40, 130)
    for protocol in ("instance", "string-dedup"):
        kwargs = {"protocol": protocol, "ties": "expected", "captions": captions}
        want = retrieval_metrics(image_emb @ text_emb.T, owners, **kwargs)
        image_t, text_t = torch.from_numpy(image_emb).cuda(), torch.from_numpy(text_emb).cuda()
        _assert_same(streaming_retrieval_metrics(image_t, text_t, owners, chunk_size=16, **kwargs), want)
        _assert_same(retrieval_metrics(image_t @ text_t.T, owners, **kwargs), want)
