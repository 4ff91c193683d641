"""Input checks for the metric layer.

Every check raises :class:`MetricInputError`, which is both a ``ValueError`` (the metric API contract) and a
:class:`~rsitr_bench.errors.UserError` (so the CLI prints one paragraph instead of a traceback). Messages
name the offending index, because "caption_image[4211] = 1093" is actionable and "bad input" is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from rsitr_bench.errors import UserError

PROTOCOLS = ("instance", "string-dedup", "fixed-5")
TIE_POLICIES = ("optimistic", "pessimistic", "expected")

# Rows per finiteness block. Only a block whose sum of squares is not finite (a bad entry, or a harmless
# overflow) is searched element-wise for the first bad entry.
_FINITE_BLOCK_ROWS = 256


class MetricInputError(UserError, ValueError):
    """Scores, caption ownership or options that cannot give a well-defined retrieval metric."""


def check_choice(value: str, options: tuple[str, ...], what: str) -> str:
    if value not in options:
        raise MetricInputError(f"unknown {what} {value!r}; expected one of {', '.join(options)}")
    return value


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """R@k cut-offs: positive integers, no repeats (a repeated k would double-weight it in mR)."""
    out = tuple(ks)
    if not out:
        raise MetricInputError("ks is empty: give at least one recall cut-off, e.g. ks=(1, 5, 10)")
    for pos, k in enumerate(out):
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise MetricInputError(f"ks[{pos}] = {k!r} is not a positive integer")
    if len(set(out)) != len(out):
        raise MetricInputError(f"ks = {out} repeats a cut-off")
    return tuple(int(k) for k in out)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A NumPy view of an array or (CPU/GPU) torch tensor; 16-bit floats are widened to float32.

    Widening float16/bfloat16 to float32 is exact, so it cannot change any order; float64 is kept as is,
    because narrowing it could create ties that are not in the caller's scores.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.element_size() < 4:
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype.kind not in "fiub":
        raise MetricInputError(f"{name} has dtype {arr.dtype}; expected real numbers")
    return arr


def as_score_matrix(similarity: Any) -> np.ndarray:
    """The similarity matrix as a C-contiguous float32/float64 array of shape [n_images, n_captions]."""
    scores = to_numpy(similarity, "similarity")
    if scores.ndim != 2:
        raise MetricInputError(
            f"similarity must be 2-D [n_images, n_captions]; got shape {tuple(scores.shape)}"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise MetricInputError(
            f"empty gallery: similarity has shape {tuple(scores.shape)} "
            "(need at least one image and one caption)"
        )
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)  # exact for any integer score below 2**53
    return np.ascontiguousarray(scores)


def as_caption_image(caption_image: Any, n_images: int, n_captions: int) -> np.ndarray:
    """``caption_image`` as int64 after checking length, range and that every image owns a caption."""
    owners = to_numpy(caption_image, "caption_image")
    if owners.ndim != 1:
        raise MetricInputError(f"caption_image must be 1-D; got shape {tuple(owners.shape)}")
    if owners.dtype.kind not in "iu":
        raise MetricInputError(f"caption_image has dtype {owners.dtype}; expected integer image indices")
    if len(owners) != n_captions:
        raise MetricInputError(
            f"shape mismatch: similarity.shape[1] = {n_captions} captions but caption_image has "
            f"{len(owners)} entries (similarity must be [n_images, n_captions])"
        )
    owners = owners.astype(np.int64)
    bad = np.flatnonzero((owners < 0) | (owners >= n_images))
    if bad.size:
        j = int(bad[0])
        raise MetricInputError(
            f"caption_image[{j}] = {owners[j]} is out of range for {n_images} images "
            f"({bad.size} caption(s) out of range)"
        )
    captionless = np.flatnonzero(np.bincount(owners, minlength=n_images) == 0)
    if captionless.size:
        raise MetricInputError(
            f"image {int(captionless[0])} has no caption ({captionless.size} image(s) without a caption): "
            "an image query without a positive has no rank"
        )
    return owners


def check_finite(values: np.ndarray, name: str, row_offset: int = 0) -> None:
    """Raise on the first NaN/inf in row-major order, naming its index (rows counted from ``row_offset``)."""
    for start in range(0, values.shape[0], _FINITE_BLOCK_ROWS):
        block = values[start : start + _FINITE_BLOCK_ROWS]
        flat = block.ravel()
        with np.errstate(over="ignore", invalid="ignore"):
            sum_of_squares = flat @ flat
        if np.isfinite(sum_of_squares):
            continue  # NaN and +-inf propagate into the sum of squares (a BLAS dot: the cheapest full read)
        bad = np.argwhere(~np.isfinite(block))
        if bad.size:
            i, j = int(bad[0][0]), int(bad[0][1])
            value = block[i, j]
            kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
            raise MetricInputError(
                f"{name}[{i + start + row_offset}, {j}] is {kind}; every score must be finite"
            )
