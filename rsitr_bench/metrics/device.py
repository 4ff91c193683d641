"""The rank counters of :mod:`.kernel`, computed with torch where the scores are (a GPU).

Every counter is a number of comparisons (``s > m``, ``s >= m`` against the best-positive score ``m``) summed
as integers, so it is exact on any device: for the same score values a GPU gives the same (gt, ge, p) as the
NumPy kernel, ties included, and so the same ranks. What may differ between devices is only a score that the
device itself computes: the streaming path's tile products (cuBLAS and a CPU BLAS can round a dot product
differently in the last bit). Those products run in full float32 (or float64), never TF32, whatever the
training code set (:func:`full_float32`): TF32 keeps 10 mantissa bits and would manufacture ties.

This module is the only one of ``rsitr_bench.metrics`` that imports torch at import time; the others import it
when a torch tensor on a GPU, or a GPU device, is what they were given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch

from rsitr_bench.metrics.kernel import Counts, positive_counts
from rsitr_bench.metrics.protocols import Layout
from rsitr_bench.metrics.streaming import cannot_overflow, overflow_error
from rsitr_bench.metrics.validate import MetricInputError

#: Bytes of one comparison mask: the rows compared per step are as many as fit (a 8192-column tile: 4096 rows;
#: a whole 500,000-caption matrix: 67 rows), so few kernels run per tile and memory stays bounded.
MASK_BYTES = 2**25


def resolve(device: Any, *inputs: Any) -> torch.device:
    """``auto`` (or None): the GPU an input tensor is on, else CUDA when there is one, else the CPU."""
    if device is None or device == "auto":
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.device.type != "cpu":
                return x.device
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MetricInputError(f"device = {device!r} is not a torch device (use auto, cpu, cuda or cuda:N)"
                               ) from exc


@contextmanager
def matmul_precision(level: str) -> Iterator[None]:
    """``torch.set_float32_matmul_precision(level)`` inside the block; the previous setting after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def full_float32() -> AbstractContextManager[None]:
    """float32 matrix products in full precision inside the block (no TF32), whatever training set."""
    return matmul_precision("highest")


def widened(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 as float32 (exact); integers as float64 (exact below 2**53); wider floats as they are."""
    if x.dtype.is_floating_point:
        return x.float() if x.element_size() < 4 else x
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise MetricInputError(f"similarity has dtype {x.dtype}; expected real numbers")
    return x.double()


def check_finite(values: torch.Tensor, name: str, row_offset: int = 0) -> None:
    """Raise on the first NaN/inf in row-major order, naming its index (as ``validate.check_finite``)."""
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return
    i, j = (int(v) for v in bad.nonzero()[0])
    value = float(values[i, j])
    kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    raise MetricInputError(f"{name}[{i + row_offset}, {j}] is {kind}; every score must be finite")


def reduce_columns(layout: Layout, scores: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """:meth:`Layout.reduce_columns` on the device: the max over each column's duplicate captions (exact)."""
    if layout.members is None:
        return scores
    sizes = np.diff(layout.bounds[start:stop + 1])
    column = torch.from_numpy(np.repeat(np.arange(stop - start), sizes)).to(scores.device)
    out = scores.new_full((scores.shape[0], stop - start), -torch.inf)
    return out.scatter_reduce_(1, column.expand(scores.shape[0], -1), scores, "amax", include_self=True)


class DeviceCounts:
    """The (gt, ge) counters of both directions on ``device``, against the best-positive scores of
    ``rows`` and ``cols`` (NumPy :class:`~rsitr_bench.metrics.kernel.Counts`, written back by :meth:`finish`)."""

    def __init__(self, rows: Counts, cols: Counts, device: torch.device):
        self.rows, self.cols = rows, cols
        self.row_best = torch.from_numpy(rows.best).to(device)
        self.col_best = torch.from_numpy(cols.best).to(device)
        self.row_gt = torch.zeros(len(rows.best), dtype=torch.int64, device=device)
        self.row_ge = torch.zeros_like(self.row_gt)
        self.col_gt = torch.zeros(len(cols.best), dtype=torch.int64, device=device)
        self.col_ge = torch.zeros_like(self.col_gt)

    def add(self, scores: torch.Tensor, row0: int = 0, col0: int = 0, check_as: str | None = None) -> None:
        """Count one score block (images ``row0..`` x columns ``col0..``) in both directions."""
        n_cols = scores.shape[1]
        col_best = self.col_best[col0:col0 + n_cols]
        step = max(1, MASK_BYTES // max(1, n_cols))
        for start in range(0, scores.shape[0], step):
            block = scores[start:start + step]
            if check_as is not None:
                check_finite(block, check_as, row_offset=row0 + start)
            rows = slice(row0 + start, row0 + start + block.shape[0])
            threshold = self.row_best[rows, None]
            self.row_gt[rows] += (block > threshold).sum(dim=1)
            self.row_ge[rows] += (block >= threshold).sum(dim=1)
            self.col_gt[col0:col0 + n_cols] += (block > col_best).sum(dim=0)
            self.col_ge[col0:col0 + n_cols] += (block >= col_best).sum(dim=0)

    def finish(self) -> None:
        """Copy the counts into the NumPy ``Counts`` that ``build_result`` reads."""
        self.rows.gt[:] = self.row_gt.cpu().numpy()
        self.rows.ge[:] = self.row_ge.cpu().numpy()
        self.cols.gt[:] = self.col_gt.cpu().numpy()
        self.cols.ge[:] = self.col_ge.cpu().numpy()


def count_matrix(similarity: torch.Tensor, layout: Layout) -> tuple[Counts, Counts]:
    """Counters of a whole similarity matrix that lives on a GPU (``retrieval_metrics``'s device path)."""
    scores = widened(similarity.detach())
    if layout.members is None:
        gallery, check_as = scores, "similarity"
    else:  # check before merging duplicate columns, so the error names an index of `similarity`
        check_finite(scores, "similarity")
        members = torch.from_numpy(layout.members).to(scores.device)
        gallery = reduce_columns(layout, scores[:, members], 0, layout.n_columns)
        check_as = None
    pairs = (torch.from_numpy(layout.pair_image).to(scores.device),
             torch.from_numpy(layout.pair_column).to(scores.device))
    rows, cols = positive_counts(layout, gallery[pairs].cpu().numpy())
    counts = DeviceCounts(rows, cols, scores.device)
    counts.add(gallery, check_as=check_as)
    counts.finish()
    return rows, cols


def _on_device(emb: Any, device: torch.device) -> torch.Tensor:
    """An embedding matrix (the streaming path's ``_Embeddings``) on ``device``, in its own dtype."""
    if emb.is_torch:
        return emb.emb.to(device)
    array = emb.emb if emb.emb.dtype in (np.float16, np.float32, np.float64) else emb.emb.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class DeviceTiles:
    """The streaming path's score tiles on a torch device (:mod:`.streaming`): the embeddings are moved to the
    device once, each tile is widened there and multiplied in full float32/float64, then counted there."""

    def __init__(self, images: Any, texts: Any, layout: Layout, dtype: np.dtype, device: torch.device,
                 chunk_size: int):
        self.layout, self.device = layout, device
        self.dtype = torch.float64 if dtype == np.float64 else torch.float32
        self.image, self.text = _on_device(images, device), _on_device(texts, device)
        norms = []
        for emb, name in ((self.image, images.name), (self.text, texts.name)):
            largest = 0.0
            for start in range(0, emb.shape[0], chunk_size):
                block = emb[start:start + chunk_size]
                check_finite(block, name, row_offset=start)
                largest = max(largest, float(block.double().norm(dim=1).max()))
            norms.append(largest)
        self.check_overflow = not cannot_overflow(*norms, self.image.shape[1], dtype)
        self.members = None if layout.members is None else torch.from_numpy(layout.members).to(device)

    def __call__(self, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        image_block = self.image[rows[0]:rows[1]].to(self.dtype)
        if self.members is None:
            text_block = self.text[cols[0]:cols[1]]
        else:
            text_block = self.text[self.members[self.layout.bounds[cols[0]]:self.layout.bounds[cols[1]]]]
        with full_float32():
            scores = reduce_columns(self.layout, image_block @ text_block.to(self.dtype).T, *cols)
        if self.check_overflow:
            bad = ~torch.isfinite(scores)
            if bool(bad.any()):
                index = tuple(int(v) for v in bad.nonzero()[0])
                raise overflow_error(index, float(scores[index]), rows, cols, self.layout)
        return scores

    def values(self, scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return scores[torch.from_numpy(rows).to(self.device), torch.from_numpy(cols).to(self.device)].cpu().numpy()

    def counter(self, rows: Counts, cols: Counts) -> DeviceCounts:
        return DeviceCounts(rows, cols, self.device)
