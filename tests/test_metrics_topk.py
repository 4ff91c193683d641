"""metrics.top_k (the per-query samples of --log-samples) and harness.splits.limit_split (--limit)."""

from __future__ import annotations

import numpy as np

from rsitr_bench.data.model import Split
from rsitr_bench.harness.splits import limit_split
from rsitr_bench.metrics import retrieval_metrics, top_k


def test_top_k_orders_by_score_marks_positives_and_agrees_with_the_rank_kernel():
    rng = np.random.default_rng(0)
    owners = np.repeat(np.arange(7), 3)
    sim = rng.standard_normal((7, 21))
    top = top_k(sim, owners, k=5)
    ranks = retrieval_metrics(sim, owners, ks=(1,))
    assert top.i2t_caption.shape == (7, 5) and top.t2i_image.shape == (21, 5)
    assert np.array_equal(top.i2t_score, -np.sort(-sim, axis=1)[:, :5])
    assert np.array_equal(top.i2t_positive, owners[top.i2t_caption] == np.arange(7)[:, None])
    assert np.array_equal(top.t2i_positive, top.t2i_image == owners[:, None])
    for hits, rank in ((top.i2t_positive, ranks.i2t_ranks), (top.t2i_positive, ranks.t2i_ranks)):
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
        assert np.array_equal(first, np.where(rank <= 5, rank - 1, -1))


def test_top_k_uses_the_protocols_gallery_and_breaks_ties_by_index():
    sim = np.array([[0.5, 0.5, 0.9, 0.1],
                    [0.2, 0.3, 0.3, 0.8]])
    top = top_k(sim, [0, 1, 1, 0], k=10, protocol="string-dedup", captions=["a", "b", "a", "c"])
    # Columns: "a" (captions 0 and 2, of both images; its score is the max), "b" (caption 1), "c" (caption 3).
    assert top.i2t_caption.tolist() == [[0, 1, 3], [3, 0, 1]], "a tie (0.3, 0.3) goes to the lower column"
    assert top.i2t_score.tolist() == [[0.9, 0.5, 0.1], [0.8, 0.3, 0.3]]
    assert top.i2t_positive.tolist() == [[True, False, True], [False, True, True]]
    assert top.t2i_query_caption.tolist() == [0, 1, 3]
    assert top.t2i_image.tolist() == [[0, 1], [0, 1], [1, 0]]
    assert top.t2i_positive.tolist() == [[True, True], [False, True], [False, True]]


def test_limit_split_keeps_the_first_images_and_only_their_captions():
    split = Split("d", "test", ["a", "b", "c"], ["a.png", "b.png", "c.png"], ["c0", "a0", "b0", "a1", "c1"],
                  [2, 0, 1, 0, 2], image_labels=["x", "y", "z"], annotations={"format": "lines"})
    small = limit_split(split, 2)
    assert (small.name, small.image_names, small.image_labels) == ("test[:2]", ["a", "b"], ["x", "y"])
    assert small.captions == ["a0", "b0", "a1"] and small.caption_image.tolist() == [0, 1, 0]
    assert small.annotations == {"format": "lines", "limited_from": {"split": "test", "images": 3, "captions": 5}}
    assert small.fingerprint()["sha256"] != split.fingerprint()["sha256"]
    assert limit_split(split, 3) is split and limit_split(split, 10) is split
