"""The retrieval data model.

A :class:`Split` is what every dataset reader produces and every method consumes: images in dataset order,
captions in dataset order, and for each caption the index of the image that owns it. Images may own any
number of captions (never assume 5). A dataset that knows where its objects are (``synthetic-rs``) declares
it through :attr:`Split.object_boxes`; real datasets leave it None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsitr_bench.data.fingerprint import split_fingerprint

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ObjectBox:
    """One annotated object of an image: its class name and its ``(x0, y0, x1, y1)`` pixel box (end exclusive).

    Ground truth: only localisation measurements and the non-deployable ``oracle-boxes`` generator read it.
    """

    label: str
    box: Box


@dataclass
class Split:
    """One split of one dataset.

    Attributes:
        dataset: the dataset's registered name, e.g. ``rsitmd``.
        name: the split's name, e.g. ``test``.
        image_names: a stable id per image, its file name as the annotation gives it (dataset order).
        image_paths: where each image lives on disk.
        captions: caption text as read (raw, not normalised; normalisation is a declared run option).
        caption_image: ``caption_image[j]`` is the index of the image that owns caption ``j``.
        image_labels: optional scene class per image (per-class recall in reports).
        annotations: optional extra per-split data of the dataset's own (format, skipped records, ...).
        object_boxes: ground-truth objects per image, declared by a dataset that knows them (``synthetic-rs``)
            and None for one that does not; ``rsitr-bench eval-perspectives`` measures localisers against them.
        source: the annotation file(s) the split was read from, for error messages and provenance.
    """

    dataset: str
    name: str
    image_names: list[str]
    image_paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray
    image_labels: list[str] | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    object_boxes: list[list[ObjectBox]] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        where = f"split {self.name!r} of dataset {self.dataset!r}" + (f" ({self.source})" if self.source else "")
        if not self.image_names:
            raise ValueError(f"{where} has zero images")
        if len(self.image_paths) != len(self.image_names):
            raise ValueError(f"{where}: {len(self.image_paths)} image paths for {len(self.image_names)} images")
        if self.caption_image.shape != (len(self.captions),):
            raise ValueError(f"{where}: {self.caption_image.shape[0]} owners for {len(self.captions)} captions")
        bad = np.flatnonzero((self.caption_image < 0) | (self.caption_image >= len(self.image_names)))
        if bad.size:
            raise ValueError(f"{where}: caption {int(bad[0])} points at image {int(self.caption_image[bad[0]])}, "
                             f"outside 0..{len(self.image_names) - 1}")
        counts = np.bincount(self.caption_image, minlength=len(self.image_names))
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(f"{where}: image {self.image_names[int(empty[0])]!r} (index {int(empty[0])}) "
                             f"has no caption")
        if self.image_labels is not None and len(self.image_labels) != len(self.image_names):
            raise ValueError(f"{where}: {len(self.image_labels)} labels for {len(self.image_names)} images")
        if self.object_boxes is not None and len(self.object_boxes) != len(self.image_names):
            raise ValueError(f"{where}: object boxes of {len(self.object_boxes)} images for "
                             f"{len(self.image_names)} images")

    @property
    def n_images(self) -> int:
        return len(self.image_names)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def captions_of(self, image_index: int) -> list[int]:
        """Indices of the captions owned by one image."""
        return np.flatnonzero(self.caption_image == image_index).tolist()

    def fingerprint(self, normalization: str = "none") -> dict:
        return split_fingerprint(self, normalization)
