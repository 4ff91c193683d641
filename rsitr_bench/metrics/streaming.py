"""Metrics straight from embeddings for galleries whose similarity matrix does not fit in memory.

Scores are computed tile by tile (``chunk_size`` images x ``chunk_size`` gallery columns, dot product) and
only the rank counters of :mod:`rsitr_bench.metrics.kernel` are kept, so the extra memory is a few tiles
plus O(n_images + n_captions) counters, independent of the gallery's n_images x n_captions.

Two passes over the tiles:

1. the tiles that contain a positive pair (a narrow band for the usual caption-after-image layout) give the
   best-positive score of every query;
2. every tile is recomputed and counted against those thresholds.

The pass-1 scores are taken from the very same tile products as pass 2 (same slices, same shapes), never
from a separate dot product, because a differently-ordered sum can differ in the last bit and silently turn
a tie into a win or a loss. Embeddings in float16/bfloat16 are widened to float32 tile by tile (exact) and
the product runs in float32 (float64 if either side is float64): 16-bit *products* would round scores to
8-11 bits and manufacture ties (measured in ``docs/metrics.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rsitr_bench.metrics.kernel import (
    RetrievalResult,
    accumulate_counts,
    build_result,
    positive_counts,
)
from rsitr_bench.metrics.protocols import Layout, build_layout
from rsitr_bench.metrics.validate import (
    PROTOCOLS,
    TIE_POLICIES,
    MetricInputError,
    as_caption_image,
    check_choice,
    check_finite,
    check_ks,
)

DEFAULT_CHUNK_SIZE = 2048


class _Embeddings:
    """Row blocks of an embedding matrix as float32/float64 NumPy arrays, widened block by block."""

    def __init__(self, emb: Any, name: str):
        self.name = name
        if hasattr(emb, "detach") and hasattr(emb, "cpu"):  # torch tensor, kept as one until sliced
            emb = emb.detach()
            if emb.dtype.is_complex or not emb.dtype.is_floating_point:
                raise MetricInputError(f"{name} has dtype {emb.dtype}; expected floating-point embeddings")
            self.is_torch, self.wide = True, emb.element_size() == 8
        else:
            emb = np.asarray(emb)
            if emb.dtype.kind != "f":
                raise MetricInputError(f"{name} has dtype {emb.dtype}; expected floating-point embeddings")
            self.is_torch, self.wide = False, emb.dtype == np.float64
        if emb.ndim != 2:
            raise MetricInputError(f"{name} must be 2-D [n, dim]; got shape {tuple(emb.shape)}")
        self.emb = emb
        self.shape = tuple(emb.shape)

    def block(self, index: slice | np.ndarray, dtype: np.dtype) -> np.ndarray:
        part = self.emb[index]
        if self.is_torch:
            part = part.cpu()
            part = (part.double() if dtype == np.float64 else part.float()).numpy()
        return np.ascontiguousarray(part, dtype=dtype)

    def check_finite(self, dtype: np.dtype, rows: int) -> None:
        for start in range(0, self.shape[0], rows):
            check_finite(self.block(slice(start, start + rows), dtype), self.name, row_offset=start)


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


class _Tiles:
    """Score tiles ``image_emb[rows] @ text_emb[column members].T``, reduced to gallery columns."""

    def __init__(self, images: _Embeddings, texts: _Embeddings, layout: Layout, dtype: np.dtype):
        self.images, self.texts, self.layout, self.dtype = images, texts, layout, dtype

    def __call__(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        image_block = self.images.block(slice(*rows), self.dtype)
        text_block = self.texts.block(self.layout.column_members(*cols), self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by index
            scores = self.layout.reduce_columns(image_block @ text_block.T, *cols)
            flat = scores.ravel()
            sum_of_squares = flat @ flat
        if not np.isfinite(sum_of_squares):  # finite embeddings can still overflow the product
            bad = np.argwhere(~np.isfinite(scores))
            if bad.size:
                i, c = int(bad[0][0]) + rows[0], int(bad[0][1]) + cols[0]
                j = int(self.layout.query_caption[c])
                raise MetricInputError(
                    f"the score of image {i} and caption {j} overflows to {scores[tuple(bad[0])]}"
                )
        return scores


def streaming_retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    caption_image: Any,
    ks: Iterable[int] = (1, 5, 10),
    protocol: str = "instance",
    ties: str = "optimistic",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    captions: Sequence[str] | None = None,
) -> RetrievalResult:
    """:func:`~rsitr_bench.metrics.retrieval_metrics` of ``image_emb @ text_emb.T``, computed tile-wise.

    Args:
        image_emb: ``[n_images, dim]`` array or tensor (any float dtype; normalise it first for cosine).
        text_emb: ``[n_captions, dim]``.
        chunk_size: images and gallery columns per tile; peak extra memory is about
            ``6 * chunk_size**2`` bytes in float32 plus O(n_images + n_captions) counters.
        Other arguments as :func:`~rsitr_bench.metrics.retrieval_metrics`.

    The result equals ``retrieval_metrics`` on the full product whenever the product's entries are the same
    bits; a BLAS may round a tile differently from one big product (last-bit differences, relevant only for
    near-ties), while within this function every score is computed exactly once per pass with identical
    shapes, so ranks are self-consistent.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    check_choice(ties, TIE_POLICIES, "tie policy")
    ks = check_ks(ks)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise MetricInputError(f"chunk_size = {chunk_size!r} is not a positive integer")
    images, texts = _Embeddings(image_emb, "image_emb"), _Embeddings(text_emb, "text_emb")
    (n_images, dim), (n_captions, text_dim) = images.shape, texts.shape
    if n_images == 0 or n_captions == 0:
        raise MetricInputError(f"empty gallery: {n_images} image and {n_captions} caption embeddings")
    if dim != text_dim:
        raise MetricInputError(
            f"shape mismatch: image_emb.shape[1] = {dim} but text_emb.shape[1] = {text_dim}"
        )
    owners = as_caption_image(caption_image, n_images, n_captions)
    layout = build_layout(protocol, owners, n_images, captions)
    dtype = np.dtype(np.float64 if images.wide or texts.wide else np.float32)
    images.check_finite(dtype, chunk_size)
    texts.check_finite(dtype, chunk_size)
    tile = _Tiles(images, texts, layout, dtype)
    row_spans, col_spans = _spans(n_images, chunk_size), _spans(layout.n_columns, chunk_size)

    # Pass 1: best positive per query, read from the tiles that hold positive pairs.
    pair_scores = np.empty(len(layout.pair_image), dtype=dtype)
    pair_tile = (layout.pair_image // chunk_size) * len(col_spans) + layout.pair_column // chunk_size
    order = np.argsort(pair_tile, kind="stable")
    tile_ids, starts = np.unique(pair_tile[order], return_index=True)
    for tile_id, lo, hi in zip(tile_ids, starts, [*starts[1:], len(order)], strict=True):
        rows, cols = row_spans[tile_id // len(col_spans)], col_spans[tile_id % len(col_spans)]
        which = order[lo:hi]
        pair_scores[which] = tile(rows, cols)[
            layout.pair_image[which] - rows[0], layout.pair_column[which] - cols[0]
        ]
    row_counts, col_counts = positive_counts(layout, pair_scores)

    # Pass 2: count every tile against the thresholds.
    for rows in row_spans:
        for cols in col_spans:
            accumulate_counts(tile(rows, cols), row_counts, col_counts, row0=rows[0], col0=cols[0])
    return build_result(layout, row_counts, col_counts, ks, protocol, ties)
