"""Independent transcriptions of the metric kernels the field uses, and checks that they are faithful.

The golden tests in ``test_metrics.py`` compare ``rsitr_bench.metrics`` against these. They are written
from the published semantics, deliberately in the slow, obvious style of the originals (one sort per query):

* ``itm_eval`` (PIR/HarMA/MPS-CLIP ``Retrieval.py``): reversed argsort per query, i2t rank = minimum rank
  over the image's captions, t2i rank = rank of the owner image, R@k = 100 * #(rank0 < k) / n, and
  ``r_mean = (mean_k txt_r + mean_k img_r) / 2``, rounded to 2 decimals.
* CLIP_benchmark ``recall_at_k`` (``clip_benchmark/metrics/zeroshot_retrieval.py``): top-k per query, recall
  = true positives in top-k / #positives, paper R@k = share of queries with recall > 0, as a fraction.
* SkyCLIP's string-deduplicated protocol: unique caption strings are the gallery/queries, every image that
  carries the string is a positive.

None of them specifies tie-breaking (``np.argsort``/``torch.topk`` order ties arbitrarily). To compare
"under the matching tie policy", :func:`resolve_ties` rewrites a matrix so that every positive beats
(optimistic) or loses to (pessimistic) the negatives it is tied with, keeping every other order: the
references then have no tie left that matters, and must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def positive_matrix(caption_image: np.ndarray, n_images: int) -> np.ndarray:
    """Boolean [n_images, n_captions]: P[i, j] = caption j belongs to image i."""
    pos = np.zeros((n_images, len(caption_image)), dtype=bool)
    pos[caption_image, np.arange(len(caption_image))] = True
    return pos


def resolve_ties(scores: np.ndarray, positives: np.ndarray, policy: str) -> np.ndarray:
    """Scores in which positives win (optimistic) or lose (pessimistic) every tie with a negative.

    Exact: dense ranks of the original scores, doubled, plus a 0/1 tie-break bit.
    """
    _, dense = np.unique(scores, return_inverse=True)
    bit = positives if policy == "optimistic" else ~positives
    return 2.0 * dense.reshape(scores.shape) + bit


def itm_eval(scores_i2t: np.ndarray, caption_image: np.ndarray, ks=(1, 5, 10)):
    """PIR/HarMA ``itm_eval`` semantics (ranks returned 0-based, as in the original)."""
    n_images, n_captions = scores_i2t.shape
    img2txt = [np.flatnonzero(caption_image == i) for i in range(n_images)]
    i2t_ranks = np.zeros(n_images)
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score, kind="stable")[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        i2t_ranks[index] = rank
    t2i_ranks = np.zeros(n_captions)
    for index, score in enumerate(scores_i2t.T):
        inds = np.argsort(score, kind="stable")[::-1]
        t2i_ranks[index] = np.where(inds == caption_image[index])[0][0]
    tr = [100.0 * len(np.where(i2t_ranks < k)[0]) / len(i2t_ranks) for k in ks]
    ir = [100.0 * len(np.where(t2i_ranks < k)[0]) / len(t2i_ranks) for k in ks]
    r_mean = (sum(tr) / len(ks) + sum(ir) / len(ks)) / 2
    result = {f"txt_r{k}": round(v, 2) for k, v in zip(ks, tr, strict=True)}
    result |= {f"img_r{k}": round(v, 2) for k, v in zip(ks, ir, strict=True)}
    result["r_mean"] = round(r_mean, 2)
    return result, i2t_ranks, t2i_ranks


def cb_recall_at_k(scores: np.ndarray, positive_pairs: np.ndarray, k: int) -> np.ndarray:
    """CLIP_benchmark ``recall_at_k`` semantics, one query (row) at a time."""
    out = np.zeros(len(scores))
    for q, (row, pos) in enumerate(zip(scores, positive_pairs, strict=True)):
        top = np.argsort(-row, kind="stable")[:k]
        out[q] = pos[top].sum() / pos.sum()
    return out


def cb_hits(scores_i2t: np.ndarray, positives: np.ndarray, k: int, kernel=cb_recall_at_k):
    """Per-query hits (recall > 0) in CLIP_benchmark's two directions, with k clamped to the gallery.

    CLIP_benchmark's scores are texts x images: image retrieval (t2i) uses them as is, text retrieval
    (i2t) their transpose. ``torch.topk`` rejects k > gallery size; for such k every query is a hit.
    """
    t2i = kernel(scores_i2t.T, positives.T, min(k, scores_i2t.shape[0])) > 0
    i2t = kernel(scores_i2t, positives, min(k, scores_i2t.shape[1])) > 0
    return np.asarray(i2t, dtype=float), np.asarray(t2i, dtype=float)


def dedup_reference(scores_i2t: np.ndarray, caption_image: np.ndarray, captions, ks=(1, 5, 10)):
    """SkyCLIP protocol: per-query hits over unique strings (score of a string = its first column)."""
    unique, first = np.unique(np.asarray(captions, dtype=object), return_index=True)
    order = np.argsort(first)  # first-occurrence order
    unique, first = unique[order], first[order]
    n_images = scores_i2t.shape[0]
    gallery = scores_i2t[:, first]
    positives = np.zeros((n_images, len(unique)), dtype=bool)
    for j, text in enumerate(captions):
        positives[caption_image[j], np.flatnonzero(unique == text)[0]] = True
    return gallery, positives


def first_positive_ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """1-based rank of the first positive per row, by a stable descending sort."""
    ranks = np.zeros(len(scores))
    for q, (row, pos) in enumerate(zip(scores, positives, strict=True)):
        order = np.argsort(-row, kind="stable")
        ranks[q] = np.flatnonzero(pos[order])[0] + 1
    return ranks


# --- the transcriptions themselves are checked against the real kernel and hand-computed values ---------


def test_itm_eval_transcription_on_a_hand_computed_case():
    scores = np.array([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.95, 0.1]])
    result, i2t, t2i = itm_eval(scores, np.array([0, 0, 1, 1]), ks=(1, 2))
    # image 0 owns captions 0, 1: caption 0 is first -> rank0 0; image 1 owns 2, 3: caption 2 first -> 0
    assert i2t.tolist() == [0, 0]
    # captions 0, 1 belong to image 0: columns [0.9, 0.2] -> 0 and [0.1, 0.7] -> 1 (image 1 scores higher);
    # captions 2, 3 belong to image 1: [0.8, 0.95] -> 0 and [0.3, 0.1] -> 1
    assert t2i.tolist() == [0, 1, 0, 1]
    assert result == {"txt_r1": 100.0, "txt_r2": 100.0, "img_r1": 50.0, "img_r2": 100.0, "r_mean": 87.5}


@pytest.mark.parametrize("k", [1, 3, 7])
def test_cb_transcription_matches_the_installed_clip_benchmark_kernel(k):
    zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    rng = np.random.default_rng(k)
    scores = rng.standard_normal((40, 9))
    positives = rng.random((40, 9)) < 0.3
    positives[np.arange(40), rng.integers(0, 9, 40)] = True
    ours = cb_recall_at_k(scores, positives, k)
    theirs = zr.recall_at_k(torch.from_numpy(scores), torch.from_numpy(positives), k).numpy()
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # CLIP_benchmark divides in float32
