"""The rank kernel: ranks of the first positive in both directions, without sorting anything.

For a query with gallery scores s and positive set P, let m = max over P of s (the best positive). Then

* ``gt`` = #items with s > m (all negatives, because m is the best positive),
* ``e``  = #negatives with s == m (negatives *tied* with the best positive),
* ``p``  = #positives with s == m (at least 1).

Every tie policy is a function of (gt, e, p) alone, so one pass of two comparisons per direction gives exact
ranks for the whole matrix (O(n_images * n_captions), no argsort, no top-k):

* ``optimistic``:  the best positive goes before tied negatives. rank = gt + 1. This is what a kernel does
  when ties happen to break in the positive's favour.
* ``pessimistic``: tied negatives go first. rank = gt + e + 1.
* ``expected``: the expectation under a uniformly random order of the tied block (e negatives, p positives).
  The first positive's position in the block is 1 + X with E[X] = e / (p + 1), so rank = gt + 1 + e/(p+1);
  R@k is the probability that the first positive lands within the k - gt slots left in the top k:
  1 - C(e, k-gt) / C(e+p, k-gt)  (0 if k <= gt).

Ranks are 1-based (PIR's 0-based ``rank < k`` is our ``rank <= k``). A query is *tied* when e > 0: only then
do the policies disagree (ties among positives change nothing).

A similarity matrix that is a torch tensor on a GPU is counted there (:mod:`.device`): the counts are sums of
comparisons, exact on any device, so the result is the one the NumPy kernel gives for the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsitr_bench.metrics.protocols import Layout, build_layout
from rsitr_bench.metrics.validate import (
    PROTOCOLS,
    TIE_POLICIES,
    as_caption_image,
    as_score_matrix,
    check_choice,
    check_finite,
    check_ks,
)

# Rows compared per step. <= 255 so a uint8 column sum of one step cannot overflow; 64 rows of a typical
# caption gallery keep the float block and its boolean mask in L2 cache.
_BLOCK_ROWS = 64
DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class RetrievalResult:
    """Metrics of one run plus the per-query data that reports and statistics need.

    ``metrics`` holds R@k in percent (2 decimals), ``mR`` (mean of all R@k of both directions, computed
    from the unrounded recalls, as PIR's ``r_mean``), and mean/median 1-based rank per direction.
    ``*_hits[k]`` is each query's hit value for R@k: 0/1, or the hit probability under ``ties="expected"``.
    ``t2i_query_caption[q]`` is the caption index of t2i query q (its first occurrence under string-dedup).
    ``gallery_sizes`` is the number of candidates per direction (captions, or distinct strings, for i2t;
    images for t2i).
    """

    metrics: dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray
    i2t_hits: dict[int, np.ndarray]
    t2i_hits: dict[int, np.ndarray]
    protocol: str
    ties: str
    tied_queries: dict[str, int]
    ks: tuple[int, ...]
    t2i_query_caption: np.ndarray = field(repr=False)
    gallery_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def n_queries(self) -> dict[str, int]:
        return {"i2t": len(self.i2t_ranks), "t2i": len(self.t2i_ranks)}

    @property
    def saturated(self) -> dict[str, dict[str, Any]]:
        """The directions whose gallery is not larger than some cut-off: ``{direction: {"gallery", "ks"}}``.

        R@k with k >= the gallery size is 100 % by construction (e.g. R@10 over 8 test images), so it says
        nothing about the method and inflates mR; a result that contains such a k must say so.
        """
        out = {}
        for direction, size in self.gallery_sizes.items():
            ks = [k for k in self.ks if k >= size]
            if ks:
                out[direction] = {"gallery": size, "ks": ks}
        return out

    def hits(self, direction: str) -> dict[int, np.ndarray]:
        return self.i2t_hits if direction == "i2t" else self.t2i_hits

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (metrics and declarations, not the per-query arrays)."""
        return {
            "metrics": dict(self.metrics),
            "unit": "percent",
            "protocol": self.protocol,
            "ties": self.ties,
            "tied_queries": dict(self.tied_queries),
            "ks": list(self.ks),
            "n_queries": self.n_queries,
            "saturated_ks": self.saturated,
        }


@dataclass
class Counts:
    """Per-query (gt, ge, p) accumulators for one direction; see the module docstring."""

    best: np.ndarray  # score of the best positive
    tied_positives: np.ndarray  # p
    gt: np.ndarray
    ge: np.ndarray

    @classmethod
    def from_positives(cls, values: np.ndarray, query: np.ndarray, n_queries: int) -> Counts:
        """Best positive score and its multiplicity per query, from the scores of all positive pairs."""
        best = np.full(n_queries, -np.inf, dtype=values.dtype)
        np.maximum.at(best, query, values)
        tied = np.bincount(query[values == best[query]], minlength=n_queries)
        zeros = np.zeros(n_queries, dtype=np.int64)
        return cls(best=best, tied_positives=tied, gt=zeros, ge=zeros.copy())


def accumulate_counts(
    scores: np.ndarray, rows: Counts, cols: Counts, row0: int = 0, col0: int = 0, check_as: str | None = None
) -> None:
    """Add the counts of one score block (images ``row0..`` x columns ``col0..``) to both directions.

    Two comparisons per direction and entry; booleans are summed as uint8 (NumPy's bool sum is several
    times slower). The streaming path calls this once per tile, the full-matrix path once. With
    ``check_as``, each step is also checked for NaN/inf while it is in cache (an up-front pass over the
    whole matrix would cost about 15% of the kernel).
    """
    n_rows, n_cols = scores.shape
    row_best = rows.best[row0 : row0 + n_rows, None]
    col_best = cols.best[col0 : col0 + n_cols]
    col_gt = np.zeros(n_cols, dtype=np.int64)
    col_ge = np.zeros(n_cols, dtype=np.int64)
    mask = np.empty((min(_BLOCK_ROWS, n_rows), n_cols), dtype=bool)
    as_u8 = mask.view(np.uint8)
    for start in range(0, n_rows, _BLOCK_ROWS):
        block = scores[start : start + _BLOCK_ROWS]
        r = block.shape[0]
        m, u, thr = mask[:r], as_u8[:r], row_best[start : start + r]
        rows_here = slice(row0 + start, row0 + start + r)
        if check_as is not None:
            check_finite(block, check_as, row_offset=row0 + start)
        np.greater(block, thr, out=m)
        rows.gt[rows_here] += u.sum(axis=1, dtype=np.int32)
        np.greater_equal(block, thr, out=m)
        rows.ge[rows_here] += u.sum(axis=1, dtype=np.int32)
        np.greater(block, col_best, out=m)
        col_gt += u.sum(axis=0, dtype=np.uint8)
        np.greater_equal(block, col_best, out=m)
        col_ge += u.sum(axis=0, dtype=np.uint8)
    cols.gt[col0 : col0 + n_cols] += col_gt
    cols.ge[col0 : col0 + n_cols] += col_ge


def ranks_and_hits(
    counts: Counts, ks: Sequence[int], ties: str
) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """1-based rank of the first positive, per-k hit values and the number of tied queries."""
    gt = counts.gt.astype(np.float64)
    p = counts.tied_positives.astype(np.float64)
    e = (counts.ge - counts.gt).astype(np.float64) - p
    if ties == "optimistic":
        ranks = gt + 1.0
    elif ties == "pessimistic":
        ranks = gt + e + 1.0
    else:
        ranks = gt + 1.0 + e / (p + 1.0)
    if ties == "expected":
        hits = {k: _first_positive_within(k - gt, e, p) for k in ks}
    else:
        hits = {k: (ranks <= k).astype(np.float64) for k in ks}
    return ranks, hits, int(np.count_nonzero(e))


def _first_positive_within(slots: np.ndarray, e: np.ndarray, p: np.ndarray) -> np.ndarray:
    """P(first of p positives is among the first ``slots`` of a random order of e negatives + p positives).

    = 1 - C(e, s)/C(e+p, s) = 1 - prod_{t<s} (e-t)/(e+p-t); the product hits 0 once t reaches e.
    """
    s = np.clip(slots, 0, None)
    all_negative = np.ones_like(e)
    for t in range(int(np.minimum(s, e + 1).max(initial=0))):
        step = (t < s) & (t <= e)  # at t == e the factor is 0; later factors are never needed
        all_negative[step] *= (e[step] - t) / (e[step] + p[step] - t)
    return np.where(s > 0, 1.0 - all_negative, 0.0)


def summarise(
    ranks: dict[str, np.ndarray], hits: dict[str, dict[int, np.ndarray]], ks: Sequence[int]
) -> dict[str, float]:
    """Percent recalls, mR and rank statistics, rounded to 2 decimals.

    Recalls are ``100.0 * sum / n`` and mR is ``(mean_k R_i2t + mean_k R_t2i) / 2`` on unrounded values,
    exactly the arithmetic of PIR/HarMA ``itm_eval``, so the rounded numbers agree bit for bit.
    """
    recalls = {d: [100.0 * float(hits[d][k].sum()) / len(ranks[d]) for k in ks] for d in DIRECTIONS}
    metrics = {f"{d}_R@{k}": round(r, 2) for d in DIRECTIONS for k, r in zip(ks, recalls[d], strict=True)}
    metrics["mR"] = round((sum(recalls["i2t"]) / len(ks) + sum(recalls["t2i"]) / len(ks)) / 2, 2)
    for d in DIRECTIONS:
        metrics[f"{d}_meanR"] = round(float(np.mean(ranks[d])), 2)
        metrics[f"{d}_medR"] = round(float(np.median(ranks[d])), 2)
    return metrics


def positive_counts(layout: Layout, pair_scores: np.ndarray) -> tuple[Counts, Counts]:
    """Fresh (image, column) accumulators seeded with the best positive of every query."""
    rows = Counts.from_positives(pair_scores, layout.pair_image, layout.n_images)
    cols = Counts.from_positives(pair_scores, layout.pair_column, layout.n_columns)
    return rows, cols


def build_result(
    layout: Layout, rows: Counts, cols: Counts, ks: tuple[int, ...], protocol: str, ties: str
) -> RetrievalResult:
    i2t_ranks, i2t_hits, i2t_tied = ranks_and_hits(rows, ks, ties)
    t2i_ranks, t2i_hits, t2i_tied = ranks_and_hits(cols, ks, ties)
    ranks = {"i2t": i2t_ranks, "t2i": t2i_ranks}
    metrics = summarise(ranks, {"i2t": i2t_hits, "t2i": t2i_hits}, ks)
    return RetrievalResult(
        metrics=metrics,
        i2t_ranks=i2t_ranks,
        t2i_ranks=t2i_ranks,
        i2t_hits=i2t_hits,
        t2i_hits=t2i_hits,
        protocol=protocol,
        ties=ties,
        tied_queries={"i2t": i2t_tied, "t2i": t2i_tied},
        ks=ks,
        t2i_query_caption=layout.query_caption,
        gallery_sizes={"i2t": layout.n_columns, "t2i": layout.n_images},
    )


def _on_gpu(x: Any) -> bool:
    """A torch tensor on a device other than the CPU (checked without importing torch)."""
    device = getattr(x, "device", None)
    return hasattr(x, "detach") and getattr(device, "type", "cpu") != "cpu"


def retrieval_metrics(
    similarity: Any,
    caption_image: Any,
    ks: Iterable[int] = (1, 5, 10),
    protocol: str = "instance",
    ties: str = "optimistic",
    captions: Sequence[str] | None = None,
) -> RetrievalResult:
    """Image-to-text and text-to-image retrieval metrics from a full similarity matrix.

    Args:
        similarity: ``[n_images, n_captions]`` NumPy array or torch tensor; higher means more similar.
            float16/bfloat16 are widened to float32 (exact); float64 is kept.
        caption_image: ``caption_image[j]`` is the index of the image that owns caption j.
        ks: recall cut-offs.
        protocol: ``"instance"`` (default; PIR/HarMA/MPS-CLIP/CLIP_benchmark), ``"string-dedup"``
            (SkyCLIP; needs ``captions``) or ``"fixed-5"`` (AMFMN); see :mod:`rsitr_bench.metrics.protocols`.
        ties: ``"optimistic"``, ``"pessimistic"`` or ``"expected"``; see this module's docstring.
        captions: caption strings, used (and required) only by ``"string-dedup"``.

    Example (``docs/metrics.md`` walks through it)::

        >>> import numpy as np
        >>> sim = np.array([[0.9, 0.2, 0.5, 0.5],
        ...                 [0.1, 0.8, 0.5, 0.5]])
        >>> res = retrieval_metrics(sim, [0, 1, 0, 1], ks=(1, 2), ties="pessimistic")
        >>> res.metrics["i2t_R@1"], res.metrics["t2i_R@1"], res.tied_queries
        (100.0, 50.0, {'i2t': 0, 't2i': 2})

    Raises:
        ValueError (:class:`~rsitr_bench.metrics.validate.MetricInputError`): shape mismatch, an index out
        of range, an image without a caption, a NaN/inf score or an empty gallery; the message names the
        offending index.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    check_choice(ties, TIE_POLICIES, "tie policy")
    ks = check_ks(ks)
    if _on_gpu(similarity):  # count where the scores are, without copying the matrix to the host
        from rsitr_bench.metrics.device import count_matrix

        if similarity.ndim != 2 or 0 in similarity.shape:
            as_score_matrix(similarity)  # raises the CPU path's error, naming the shape
        owners = as_caption_image(caption_image, *similarity.shape)
        layout = build_layout(protocol, owners, similarity.shape[0], captions)
        rows, cols = count_matrix(similarity, layout)
        return build_result(layout, rows, cols, ks, protocol, ties)
    scores = as_score_matrix(similarity)
    n_images, n_captions = scores.shape
    owners = as_caption_image(caption_image, n_images, n_captions)
    layout = build_layout(protocol, owners, n_images, captions)
    if layout.members is None:  # gallery column j is caption j: check finiteness while counting
        gallery, check_as = scores, "similarity"
    else:  # check before merging duplicate columns, so the error names an index of `similarity`
        check_finite(scores, "similarity")
        gallery = layout.reduce_columns(scores[:, layout.members], 0, layout.n_columns)
        check_as = None
    rows, cols = positive_counts(layout, gallery[layout.pair_image, layout.pair_column])
    accumulate_counts(gallery, rows, cols, check_as=check_as)
    return build_result(layout, rows, cols, ks, protocol, ties)
