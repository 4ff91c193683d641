"""The top-k gallery items of every query, in both directions, under the same protocol as the metrics.

The rank kernel (:mod:`.kernel`) never sorts, which is why it is fast; per-query sample logs (``--log-samples``)
need the actual retrieved items, so this module sorts, once, only when asked. The gallery is the protocol's:
under ``string-dedup`` an image retrieves distinct caption strings (each shown as the first caption carrying
it) and only distinct strings are text queries, exactly the columns and queries the metrics score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rsitr_bench.metrics.protocols import build_layout
from rsitr_bench.metrics.validate import PROTOCOLS, as_caption_image, as_score_matrix, check_choice, check_finite


@dataclass(frozen=True)
class TopK:
    """The best ``k`` gallery items per query, best first (equal scores: lower gallery index first).

    ``i2t_caption[i]`` are caption indices (one per gallery column), ``t2i_image[q]`` image indices;
    ``*_score`` their scores and ``*_positive`` whether each is a positive of the query.
    ``t2i_query_caption[q]`` is the caption index of text query q.
    """

    i2t_caption: np.ndarray
    i2t_score: np.ndarray
    i2t_positive: np.ndarray
    t2i_image: np.ndarray
    t2i_score: np.ndarray
    t2i_positive: np.ndarray
    t2i_query_caption: np.ndarray


def _best(scores: np.ndarray, positive: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1), np.take_along_axis(positive, order, axis=1)


def top_k(similarity: Any, caption_image: Any, k: int = 10, protocol: str = "instance",
          captions: Sequence[str] | None = None) -> TopK:
    """Top-``k`` retrieved items of every image query and every text query of ``protocol``.

    Arguments are those of :func:`rsitr_bench.metrics.retrieval_metrics`; ``k`` larger than a gallery gives
    the whole gallery, in order.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    scores = as_score_matrix(similarity)
    check_finite(scores, "similarity")
    n_images, n_captions = scores.shape
    owners = as_caption_image(caption_image, n_images, n_captions)
    layout = build_layout(protocol, owners, n_images, captions)
    gallery = layout.reduce_columns(scores[:, layout.column_members(0, layout.n_columns)], 0, layout.n_columns)
    positive = np.zeros(gallery.shape, dtype=bool)
    positive[layout.pair_image, layout.pair_column] = True
    i2t_column, i2t_score, i2t_positive = _best(gallery, positive, k)
    t2i_image, t2i_score, t2i_positive = _best(np.ascontiguousarray(gallery.T), positive.T, k)
    return TopK(i2t_caption=layout.query_caption[i2t_column], i2t_score=i2t_score, i2t_positive=i2t_positive,
                t2i_image=t2i_image, t2i_score=t2i_score, t2i_positive=t2i_positive,
                t2i_query_caption=layout.query_caption)
