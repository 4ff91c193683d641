"""The metric-kernel transcriptions of tests/fixtures/metrics_reference.py are faithful to the originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fixtures.metrics_reference import cb_recall_at_k, itm_eval

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
