"""Keyword guidance and perspectives, behind the leakage guard.

Keyword providers and perspective generators never receive a :class:`~rsitr_bench.data.Split`. They receive
one :class:`ItemContext` per image, built by the harness, which knows each split's role in the run. On the
gallery side of val and test the context refuses to hand out captions: the refusal is recorded in the
run's :class:`LeakageAudit`, and the result is stamped ``leakage_audit: fail``. Only a method that declares
itself as reproducing the published (leaky) protocol may read them, and its result is stamped
``fail (as published)`` and non-compliant.

A context may also carry the item's ground-truth object boxes (:meth:`ItemContext.object_boxes`). Boxes are not
captions, so they do not leak the retrieval answer key, but they are ground truth a deployed system never has:
the service grants them only to a generator whose spec declares ``deployable=False`` (``oracle-boxes``), and
every run that used one is stamped non-compliant and never ranked.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rsitr_bench.data.model import ObjectBox, Split

SplitRole = Literal["train", "val", "test"]
ItemRole = Literal["query", "gallery"]


class CaptionAccessRefused(PermissionError):
    """A provider asked for the captions of a val/test gallery item."""


class GroundTruthRefused(PermissionError):
    """A plugin asked for ground-truth boxes it was not granted (only non-deployable generators get them)."""


@dataclass
class LeakageAudit:
    """Every caption read by a guidance plugin, and every refusal.

    ``allow_leak`` is set only by the explicitly named as-published preset: reads are then granted but the
    audit still fails, with the reason ``as published``.
    """

    allow_leak: bool = False
    refused: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    reads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, where: str, allowed: bool, leak: bool) -> None:
        with self._lock:
            self.reads += allowed
            if leak and allowed:
                self.leaked.append(where)
            elif leak:
                self.refused.append(where)

    def stamp(self) -> dict[str, Any]:
        """The ``leakage_audit`` entry of a result."""
        if self.leaked:
            return {"status": "fail (as published)", "leaked_items": len(self.leaked),
                    "detail": "gallery keywords were derived from the items' own val/test captions"}
        if self.refused:
            return {"status": "fail", "refused_reads": len(self.refused), "first": self.refused[0],
                    "detail": "a guidance plugin asked for captions of val/test gallery items"}
        return {"status": "pass", "caption_reads": self.reads,
                "detail": "no keyword or perspective plugin saw any val or test gallery caption"}


class _Sealed:
    """The captions and audit of one item, kept outside the item's fields.

    A dataclass field would hand the captions to ``dataclasses.asdict``, ``vars`` and pickling; here the
    only way to them is :meth:`ItemContext.captions`, which asks the audit. The holder refuses to be
    pickled or copied so it never leaves the process with its captions.
    """

    __slots__ = ("audit", "captions", "exposed", "objects")

    def __init__(self, captions: tuple[str, ...], audit: LeakageAudit | None, exposed: bool,
                 objects: tuple[ObjectBox, ...] | None):
        self.captions = captions
        self.audit = audit
        self.exposed = exposed
        self.objects = objects

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("the captions of an item context are sealed and cannot be pickled or copied")

    def __repr__(self) -> str:
        return "<sealed captions>"


# Keyed by object identity (ItemContext compares by identity), so an equal-looking context of another run
# never borrows this one's captions or audit; an entry dies with its context.
_SEALED: weakref.WeakKeyDictionary[ItemContext, _Sealed] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class ItemContext:
    """What a keyword provider or perspective generator may see of one image.

    The item's captions are not a field: they are reachable only through :meth:`captions`, which refuses
    them on the gallery side of val and test, so ``dataclasses.asdict``, ``vars`` or pickling an item can
    never hand them out by accident. Pickling and copying a context are refused outright.

    Attributes:
        dataset, split: where the item comes from; ``split_role`` is its role in this run.
        role: ``query`` (training items, whose captions are the training signal) or ``gallery``.
        index: the image's index in its split; image_name, image_path: its file.
    """

    dataset: str
    split: str
    split_role: SplitRole
    role: ItemRole
    index: int
    image_name: str
    image_path: Path
    sealed_captions: InitVar[Sequence[str]] = ()
    audit: InitVar[LeakageAudit | None] = None
    ground_truth: InitVar[Sequence[ObjectBox] | None] = None

    def __post_init__(self, sealed_captions: Sequence[str], audit: LeakageAudit | None,
                      ground_truth: Sequence[ObjectBox] | None) -> None:
        exposed = not (self.role == "gallery" and self.split_role in ("val", "test"))
        objects = None if ground_truth is None else tuple(ground_truth)
        _SEALED[self] = _Sealed(tuple(sealed_captions), audit, exposed, objects)

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError(f"an item context cannot be pickled or copied: its captions are sealed ({self.where})")

    @property
    def where(self) -> str:
        """The item, for messages and the audit: ``dataset/split image INDEX (NAME)``."""
        return f"{self.dataset}/{self.split} image {self.index} ({self.image_name})"

    @property
    def exposes_captions(self) -> bool:
        """Whether :meth:`captions` answers without a leak (train items, and any query item)."""
        return _SEALED[self].exposed

    def captions(self) -> tuple[str, ...]:
        """The item's captions, or :class:`CaptionAccessRefused` for a val/test gallery item."""
        sealed = _SEALED[self]
        leak = not sealed.exposed
        allowed = not leak or (sealed.audit is not None and sealed.audit.allow_leak)
        if sealed.audit is not None:
            sealed.audit.record(self.where, allowed, leak)
        if not allowed:
            raise CaptionAccessRefused(
                f"captions of {self.where} are sealed: it is a gallery item of the {self.split_role} split. "
                f"Use a provider that does not read captions (e.g. 'vocabulary') on the gallery side.")
        return sealed.captions

    def object_boxes(self) -> tuple[ObjectBox, ...]:
        """The item's ground-truth objects, or :class:`GroundTruthRefused` when this context was not granted them.

        The guidance service grants them only to a generator that declares ``deployable=False``, on a dataset
        that declares :attr:`~rsitr_bench.data.model.Split.object_boxes`.
        """
        objects = _SEALED[self].objects
        if objects is None:
            raise GroundTruthRefused(
                f"{self.where}: ground-truth object boxes are given only to a perspective generator whose spec "
                f"declares deployable=False (an oracle, stamped non-compliant), on a dataset that has them.")
        return objects


@dataclass(frozen=True)
class Perspective:
    """One sub-image of an image: the region a keyword names.

    Attributes:
        keyword: the keyword it was found for ("" for keyword-free generators such as ``grid``).
        box: ``(x0, y0, x1, y1)`` in pixels of the original image.
        score: the generator's confidence.
        mask: optional boolean mask of the image's size (SAM-based generators).
    """

    keyword: str
    box: tuple[int, int, int, int]
    score: float = 1.0
    mask: np.ndarray | None = field(default=None, compare=False)


def item_contexts(split: Split, split_role: SplitRole, role: ItemRole, audit: LeakageAudit,
                  ground_truth: bool = False) -> list[ItemContext]:
    """Build the guarded contexts of every image of a split; ``ground_truth`` grants its object boxes."""
    owned: list[list[str]] = [[] for _ in range(split.n_images)]
    for text, owner in zip(split.captions, split.caption_image.tolist()):
        owned[owner].append(text)
    if ground_truth and split.object_boxes is None:
        raise ValueError(f"split {split.dataset}/{split.name} declares no object boxes to grant")
    boxes = split.object_boxes if ground_truth else None
    return [ItemContext(split.dataset, split.name, split_role, role, i, split.image_names[i],
                        Path(split.image_paths[i]), sealed_captions=owned[i], audit=audit,
                        ground_truth=None if boxes is None else boxes[i])
            for i in range(split.n_images)]
