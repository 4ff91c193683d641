"""Localisation measured against ground truth: how well a perspective generator's boxes find the named objects.

A picture of one image cannot tell a weak localiser from an unlucky image; a dataset that declares its objects'
boxes (:attr:`~rsitr_bench.data.model.Split.object_boxes`, filled by ``synthetic-rs``) can. The keywords and
boxes measured here come from the very :class:`~rsitr_bench.guidance.service.GuidanceService` call a run makes
(same roles, same leakage guard, same cache), so they are the boxes a method would crop.

For each keyword that names an object class present in the image, the generator's box for that keyword is
compared with every object of that class, and the **best-matching object** counts (an image with three storage
tanks is localised when the box finds one of them). A keyword with no box scores IoU 0. A keyword-free
generator (``grid``) answers no keyword, so each keyword is scored against the image's best-matching box, a
generous reading. Masks are judged by their box: the ground truth is a box, and a mask tighter than its object's
box would be penalised for being right. Keywords that name no object of the image are counted apart: they are
the keyword provider's error, not the localiser's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from rsitr_bench.api import GuidanceResult
from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.data.model import Box, ObjectBox, Split
from rsitr_bench.errors import DataError, UserError
from rsitr_bench.guidance.lexicon import normalize_keyword
from rsitr_bench.guidance.prepare import PreparePlan
from rsitr_bench.guidance.service import GuidanceService

#: A keyword is localised ("hit") when its box overlaps its best-matching object by at least this IoU.
HIT_IOU = 0.5
#: A box is "large" when it covers more than this fraction of the image: a localiser that returns large boxes
#: for everything crops the scene, not the object.
LARGE_FRACTION = 0.5


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (end exclusive); 0 when both are empty."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


@dataclass(frozen=True)
class KeywordMatch:
    """One keyword of one image that names an annotated object.

    Attributes:
        image: the image's name; keyword: the keyword.
        box: the generator's box for it (keyword-free generators: the best-matching box), None when none.
        truth: the box of the best-matching object of the keyword's class (the largest when there is no box).
        objects: how many objects of that class the image has.
        iou: IoU of ``box`` and ``truth``; 0 without a box.
    """

    image: str
    keyword: str
    box: Box | None
    truth: Box
    objects: int
    iou: float


@dataclass
class LocalisationReport:
    """The localisation of one generator on (part of) one split, against its ground-truth boxes.

    Attributes:
        dataset, split, split_role: what was measured; keywords, generator: the provider and generator names.
        keyword_guided: False for a keyword-free generator (its keywords are scored against the best box).
        images: images measured; keyword_count: keywords they got in total.
        matches: the keywords that name an object of their image, with their IoU.
        boxes: perspectives returned in total; large_boxes: those covering more than ``LARGE_FRACTION``.
        stats: the guidance service's counters of the call.
    """

    dataset: str
    split: str
    split_role: str
    keywords: str
    generator: str
    keyword_guided: bool
    images: int
    keyword_count: int
    boxes: int
    large_boxes: int
    matches: list[KeywordMatch] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Mean IoU and hit rate over matched keywords, and the box statistics per image."""
        n = len(self.matches)
        return {
            "mean_iou": sum(m.iou for m in self.matches) / n if n else None,
            "hit_rate": sum(m.iou >= HIT_IOU for m in self.matches) / n if n else None,
            "keywords_scored": n,
            "keywords_without_object": self.keyword_count - n,
            "keywords_without_box": sum(m.box is None for m in self.matches),
            "keywords_per_image": self.keyword_count / self.images,
            "boxes_per_image": self.boxes / self.images,
            "large_box_fraction": self.large_boxes / self.boxes if self.boxes else None,
        }

    def per_keyword(self) -> dict[str, dict[str, Any]]:
        """Mean IoU and hit rate per keyword class, most frequent first."""
        groups: dict[str, list[KeywordMatch]] = {}
        for m in self.matches:
            groups.setdefault(m.keyword, []).append(m)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return {k: {"n": len(ms), "mean_iou": sum(m.iou for m in ms) / len(ms),
                    "hit_rate": sum(m.iou >= HIT_IOU for m in ms) / len(ms)} for k, ms in ordered}

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "split_role": self.split_role,
                "keywords": self.keywords, "generator": self.generator, "keyword_guided": self.keyword_guided,
                "images": self.images, "hit_iou": HIT_IOU, "large_fraction": LARGE_FRACTION,
                "summary": self.summary(), "per_keyword": self.per_keyword(),
                "matches": [asdict(m) for m in self.matches], "stats": self.stats}


def score_localisation(split: Split, result: GuidanceResult) -> LocalisationReport:
    """Compare the perspectives of ``result`` (a guidance call on ``split``) with the split's object boxes."""
    truth = _object_boxes(split)
    guided = bool(result.config["keyword_guided"])
    report = LocalisationReport(split.dataset, split.name, result.split_role, result.config["keywords"]["name"],
                                result.config["perspectives"]["name"], guided, len(result.indices),
                                sum(map(len, result.keywords)), 0, 0, stats=dict(result.stats))
    for index, keywords, found in zip(result.indices, result.keywords, result.perspectives):
        with Image.open(split.image_paths[index]) as img:
            width, height = img.size
        report.boxes += len(found)
        report.large_boxes += sum(_area(p.box) > LARGE_FRACTION * width * height for p in found)
        by_class: dict[str, list[ObjectBox]] = {}
        for obj in truth[index]:
            by_class.setdefault(normalize_keyword(obj.label), []).append(obj)
        for keyword in keywords:
            objects = by_class.get(keyword)
            if not objects:
                continue
            boxes = [p.box for p in found if not guided or p.keyword == keyword]
            report.matches.append(_best_match(split.image_names[index], keyword, boxes, objects))
    return report


def _best_match(image: str, keyword: str, boxes: list[Box], objects: list[ObjectBox]) -> KeywordMatch:
    if not boxes:
        largest = max((o.box for o in objects), key=_area)
        return KeywordMatch(image, keyword, None, largest, len(objects), 0.0)
    iou, box, obj = max(((box_iou(b, o.box), b, o.box) for b in boxes for o in objects), key=lambda t: t[0])
    return KeywordMatch(image, keyword, tuple(box), obj, len(objects), iou)


def _object_boxes(split: Split) -> list[list[ObjectBox]]:
    if split.object_boxes is None:
        raise DataError(f"Dataset {split.dataset!r} (split {split.name}) declares no ground-truth object boxes, "
                        f"so its localisation cannot be measured. Use a dataset that has them, e.g. synthetic-rs.")
    return split.object_boxes


def measure_localisation(service: GuidanceService, role: str, plan: PreparePlan,
                         backbone: Callable[[], Backbone], limit: int | None = None) -> LocalisationReport:
    """Run the guidance of ``plan`` on the first ``limit`` images of the ``role`` split, as a run would, and
    score it: the role's keyword provider (``plan.keywords_for``), behind the service's leakage guard."""
    if role not in service.roles:
        raise UserError(f"This dataset has no {role} split; available: {', '.join(service.roles)}.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}.")
    split = service.roles[role]
    _object_boxes(split)  # fail before any model is built
    provider, options = plan.keywords_for(role)
    count = split.n_images if limit is None else min(limit, split.n_images)
    result = service.perspectives(split, keywords=provider, generator=plan.generator, backbone=backbone,
                                  keyword_options=options, generator_options=plan.generator_options,
                                  max_per_image=plan.max_per_image, indices=range(count), with_masks=False)
    return score_localisation(split, result)
