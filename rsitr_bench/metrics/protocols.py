"""Retrieval protocols: which gallery columns exist and which (image, column) pairs are positives.

All three protocols in the RS literature reduce to one structure, a :class:`Layout`:

* ``instance`` (PIR, HarMA, MPS-CLIP, CLIP_benchmark): one gallery column per caption; caption j's only
  positive is ``caption_image[j]``; an image's positives are all of its captions.
* ``fixed-5`` (AMFMN, VT-RSBS): ``instance`` on a layout that must be exactly 5 contiguous captions per image
  (captions 5i..5i+4 belong to image i). Validated, never assumed.
* ``string-dedup`` (SkyCLIP): one gallery column per *distinct caption string*, in first-occurrence order;
  its positives are every image that carries the string. The score of (image, string) is the **maximum**
  over the string's duplicate caption columns: duplicates have identical embeddings under any deterministic
  text encoder, so this equals "the score of the string", and the max keeps the rule order-independent
  should a caller pass columns that differ (e.g. with test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rsitr_bench.metrics.validate import MetricInputError

CAPTIONS_PER_IMAGE_FIXED = 5


@dataclass(frozen=True)
class Layout:
    """Gallery columns and positive pairs for one protocol.

    ``members``/``bounds`` describe column c as the captions ``members[bounds[c]:bounds[c + 1]]``;
    both are ``None`` when column c is simply caption c (``instance``, ``fixed-5``).
    """

    n_images: int
    n_columns: int
    pair_image: np.ndarray  # positive pairs, unique, sorted by (column, image)
    pair_column: np.ndarray
    query_caption: np.ndarray  # for each column (= t2i query), the caption index that first carries it
    members: np.ndarray | None = None
    bounds: np.ndarray | None = None

    def column_members(self, start: int, stop: int) -> slice | np.ndarray:
        """Caption indices behind columns [start, stop), grouped column by column."""
        if self.members is None:
            return slice(start, stop)
        return self.members[self.bounds[start] : self.bounds[stop]]

    def reduce_columns(self, scores: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Scores over ``column_members(start, stop)`` reduced to one per column (max over duplicates)."""
        if self.members is None:
            return scores
        offsets = self.bounds[start:stop] - self.bounds[start]
        return np.maximum.reduceat(scores, offsets, axis=1)


def build_layout(
    protocol: str, caption_image: np.ndarray, n_images: int, captions: Sequence[str] | None
) -> Layout:
    """The :class:`Layout` of ``protocol``; ``caption_image`` must already be validated."""
    n_captions = len(caption_image)
    if protocol == "fixed-5":
        _check_fixed5(caption_image, n_images)
    if protocol != "string-dedup":
        return Layout(
            n_images=n_images,
            n_columns=n_captions,
            pair_image=caption_image,
            pair_column=np.arange(n_captions),
            query_caption=np.arange(n_captions),
        )
    if captions is None:
        raise MetricInputError("protocol 'string-dedup' needs the caption strings: pass captions=[...]")
    if len(captions) != n_captions:
        raise MetricInputError(
            f"shape mismatch: {len(captions)} caption strings for {n_captions} captions in caption_image"
        )
    string_id: dict[str, int] = {}
    column = np.empty(n_captions, dtype=np.int64)
    for j, text in enumerate(captions):
        if not isinstance(text, str):
            raise MetricInputError(f"captions[{j}] is {type(text).__name__}, not a string")
        column[j] = string_id.setdefault(text, len(string_id))
    n_columns = len(string_id)
    members = np.argsort(column, kind="stable")
    bounds = np.searchsorted(column[members], np.arange(n_columns + 1))
    pairs = np.unique(column * n_images + caption_image)  # sorted by (column, image)
    return Layout(
        n_images=n_images,
        n_columns=n_columns,
        pair_image=pairs % n_images,
        pair_column=pairs // n_images,
        query_caption=members[bounds[:-1]],
        members=members,
        bounds=bounds,
    )


def _check_fixed5(caption_image: np.ndarray, n_images: int) -> None:
    per = CAPTIONS_PER_IMAGE_FIXED
    if len(caption_image) != per * n_images:
        raise MetricInputError(
            f"protocol 'fixed-5' needs exactly {per} captions per image: {n_images} images but "
            f"{len(caption_image)} captions"
        )
    expected = np.arange(len(caption_image)) // per
    wrong = np.flatnonzero(caption_image != expected)
    if wrong.size:
        j = int(wrong[0])
        raise MetricInputError(
            f"caption_image[{j}] = {caption_image[j]}, but protocol 'fixed-5' requires caption {j} to belong "
            f"to image {expected[j]} (captions {per}i..{per}i+{per - 1} belong to image i)"
        )
