"""Metrics straight from embeddings for galleries whose similarity matrix does not fit in memory.

Scores are computed tile by tile (``chunk_size`` images x ``chunk_size`` gallery columns, dot product) and
only the rank counters of :mod:`rsitr_bench.metrics.kernel` are kept, so the extra memory is one tile (and
its comparison masks) plus O(n_images + n_captions) counters, independent of the gallery's
n_images x n_captions.

Two passes over the tiles:

1. the tiles that contain a positive pair (a narrow band for the usual caption-after-image layout) give the
   best-positive score of every query;
2. every tile is recomputed and counted against those thresholds.

The pass-1 scores are taken from the very same tile products as pass 2 (same slices, same shapes), never
from a separate dot product, because a differently-ordered sum can differ in the last bit and silently turn
a tie into a win or a loss. Embeddings in float16/bfloat16 are widened to float32 tile by tile (exact) and
the product runs in float32 (float64 if either side is float64): 16-bit *products* would round scores to
8-11 bits and manufacture ties (measured in ``docs/metrics.md``).

Where the tiles are computed (``device``): on the CPU with NumPy's BLAS into one reused buffer, counted by the
NumPy kernel; on a GPU with torch, counted there by :mod:`.device` (exact integer counts; the products in
full float32, never TF32). ``auto`` is the GPU the embeddings are on, else CUDA when the machine has it,
else the CPU. On the CPU nearly all the time is the float32 matrix product itself (docs/metrics.md §6).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rsitr_bench.metrics.kernel import (
    Counts,
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

#: Tile side on the CPU: a float32 tile (16 MiB) and the counters' 64-row masks stay small.
DEFAULT_CHUNK_SIZE = 2048
#: Tile side on a GPU: 256 MiB of float32 scores per tile, few enough tiles that launches do not dominate.
DEFAULT_DEVICE_CHUNK_SIZE = 8192


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

    def max_norm(self, dtype: np.dtype, rows: int) -> float:
        """The largest row norm, in ``dtype`` (no copy of float32 input); inf when a sum of squares overflows,
        which only makes :func:`cannot_overflow` answer no."""
        with np.errstate(over="ignore"):
            return max(float(np.sqrt(np.einsum("ij,ij->i", b, b).max()))
                       for b in (self.block(slice(s, s + rows), dtype) for s in range(0, self.shape[0], rows)))


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def cannot_overflow(max_norm_a: float, max_norm_b: float, dim: int, dtype: np.dtype) -> bool:
    """Whether no computed dot product of rows with these norms can overflow ``dtype``.

    A floating-point dot product of length n satisfies |fl(a·b)| <= (1 + γ_n)·|a|·|b|, γ_n = n·u/(1 - n·u)
    (Cauchy-Schwarz bounds every partial sum the same way). With a factor 2 to spare, the per-tile overflow
    check is then skipped.
    """
    info = np.finfo(dtype)
    gamma = dim * float(info.eps) / (1 - dim * float(info.eps))
    return 2 * (1 + gamma) * max_norm_a * max_norm_b < float(info.max)


def overflow_error(index: tuple[int, int], value: float, rows: tuple[int, int], cols: tuple[int, int],
                   layout: Layout) -> MetricInputError:
    """The error for a score that overflowed at ``index`` of the tile (``rows``, ``cols``)."""
    i, c = int(index[0]) + rows[0], int(index[1]) + cols[0]
    j = int(layout.query_caption[c])
    return MetricInputError(f"the score of image {i} and caption {j} overflows to {value}")


class _HostTiles:
    """Score tiles ``image_emb[rows] @ text_emb[column members].T`` with NumPy's BLAS, reduced to gallery
    columns; the instance layouts write every tile into one buffer allocated once."""

    def __init__(self, images: _Embeddings, texts: _Embeddings, layout: Layout, dtype: np.dtype,
                 chunk_size: int, check_overflow: bool):
        self.images, self.texts, self.layout, self.dtype = images, texts, layout, dtype
        self.check_overflow = check_overflow
        side = min(chunk_size, images.shape[0]), min(chunk_size, layout.n_columns)
        self.buffer = np.empty(side, dtype=dtype) if layout.members is None else None

    def __call__(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        image_block = self.images.block(slice(*rows), self.dtype)
        text_block = self.texts.block(self.layout.column_members(*cols), self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by index
            if self.buffer is not None:
                out = self.buffer[: image_block.shape[0], : text_block.shape[0]]
                scores = np.matmul(image_block, text_block.T, out=out)
            else:
                scores = self.layout.reduce_columns(image_block @ text_block.T, *cols)
            if self.check_overflow:
                flat = scores.ravel()
                sum_of_squares = flat @ flat
        if self.check_overflow and not np.isfinite(sum_of_squares):  # finite embeddings can still overflow
            bad = np.argwhere(~np.isfinite(scores))
            if bad.size:
                raise overflow_error(tuple(bad[0]), scores[tuple(bad[0])], rows, cols, self.layout)
        return scores

    @staticmethod
    def values(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return scores[rows, cols]

    def counter(self, rows: Counts, cols: Counts) -> _HostCounter:
        return _HostCounter(rows, cols)


class _HostCounter:
    def __init__(self, rows: Counts, cols: Counts):
        self.rows, self.cols = rows, cols

    def add(self, scores: np.ndarray, row0: int, col0: int) -> None:
        accumulate_counts(scores, self.rows, self.cols, row0=row0, col0=col0)

    def finish(self) -> None:
        """The NumPy counters are the result already."""


def streaming_retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    caption_image: Any,
    ks: Iterable[int] = (1, 5, 10),
    protocol: str = "instance",
    ties: str = "optimistic",
    chunk_size: int | None = None,
    captions: Sequence[str] | None = None,
    device: Any = "auto",
) -> RetrievalResult:
    """:func:`~rsitr_bench.metrics.retrieval_metrics` of ``image_emb @ text_emb.T``, computed tile-wise.

    Args:
        image_emb: ``[n_images, dim]`` array or tensor (any float dtype; normalise it first for cosine).
        text_emb: ``[n_captions, dim]``.
        chunk_size: images and gallery columns per tile; default :data:`DEFAULT_CHUNK_SIZE` on the CPU,
            :data:`DEFAULT_DEVICE_CHUNK_SIZE` on a GPU. Peak memory beyond the inputs on the CPU: one
            ``chunk_size**2`` tile (4 bytes per score in float32, 8 in float64), the counters' masks of
            ``64 * chunk_size`` bytes, an image and a text block of ``chunk_size * dim`` scores when the input
            must be widened or copied, and O(n_images + n_captions) counters and outputs. On a GPU: the
            embeddings on the device, a tile, and comparison masks of at most 32 MiB.
        device: ``auto`` (module docstring), ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.
        Other arguments as :func:`~rsitr_bench.metrics.retrieval_metrics`.

    The result equals ``retrieval_metrics`` on the full product whenever the product's entries are the same
    bits; a BLAS may round a tile differently from one big product (last-bit differences, relevant only for
    near-ties), while within this function every score is computed exactly once per pass with identical
    shapes, so ranks are self-consistent.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    check_choice(ties, TIE_POLICIES, "tie policy")
    ks = check_ks(ks)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise MetricInputError(f"chunk_size = {chunk_size!r} is not a positive integer")
    target = _target(device, image_emb, text_emb)
    return _streaming(image_emb, text_emb, caption_image, ks, protocol, ties, chunk_size, captions, target)


def _target(device: Any, image_emb: Any, text_emb: Any) -> Any:
    """``"cpu"`` for the NumPy path, else the torch device (torch is imported only for a GPU or ``auto``)."""
    if isinstance(device, str) and device == "cpu":
        return "cpu"
    from rsitr_bench.metrics.device import resolve

    resolved = resolve(device, image_emb, text_emb)
    return "cpu" if resolved.type == "cpu" else resolved


def _streaming(image_emb: Any, text_emb: Any, caption_image: Any, ks: tuple[int, ...], protocol: str, ties: str,
               chunk_size: int | None, captions: Sequence[str] | None, target: Any) -> RetrievalResult:
    """The two passes on ``target``: ``"cpu"`` (NumPy) or a torch device (any, the CPU included, for tests)."""
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
    on_host = isinstance(target, str)
    chunk = chunk_size or (DEFAULT_CHUNK_SIZE if on_host else DEFAULT_DEVICE_CHUNK_SIZE)
    if on_host:
        images.check_finite(dtype, chunk)
        texts.check_finite(dtype, chunk)
        safe = cannot_overflow(images.max_norm(dtype, chunk), texts.max_norm(dtype, chunk), dim, dtype)
        tiles: Any = _HostTiles(images, texts, layout, dtype, chunk, check_overflow=not safe)
    else:
        from rsitr_bench.metrics.device import DeviceTiles

        tiles = DeviceTiles(images, texts, layout, dtype, target, chunk)
    row_spans, col_spans = _spans(n_images, chunk), _spans(layout.n_columns, chunk)

    # Pass 1: best positive per query, read from the tiles that hold positive pairs.
    pair_scores = np.empty(len(layout.pair_image), dtype=dtype)
    pair_tile = (layout.pair_image // chunk) * len(col_spans) + layout.pair_column // chunk
    order = np.argsort(pair_tile, kind="stable")
    tile_ids, starts = np.unique(pair_tile[order], return_index=True)
    for tile_id, lo, hi in zip(tile_ids, starts, [*starts[1:], len(order)], strict=True):
        rows, cols = row_spans[tile_id // len(col_spans)], col_spans[tile_id % len(col_spans)]
        which = order[lo:hi]
        pair_scores[which] = tiles.values(
            tiles(rows, cols), layout.pair_image[which] - rows[0], layout.pair_column[which] - cols[0]
        )
    row_counts, col_counts = positive_counts(layout, pair_scores)

    # Pass 2: count every tile against the thresholds.
    counter = tiles.counter(row_counts, col_counts)
    for rows in row_spans:
        for cols in col_spans:
            counter.add(tiles(rows, cols), rows[0], cols[0])
    counter.finish()
    return build_result(layout, row_counts, col_counts, ks, protocol, ties)
