"""``oracle-boxes``: each keyword's ground-truth object box, the upper bound of any localiser.

It answers "how much would MPS-CLIP gain if perspectives were perfectly localised?", which separates a weak
localiser from a weak idea. It reads the annotated boxes a dataset declares
(:attr:`~rsitr_bench.data.model.Split.object_boxes`, filled by ``synthetic-rs``), through
:meth:`~rsitr_bench.api.ItemContext.object_boxes`, which the guidance service grants only because this spec
declares ``deployable=False``. A deployed system has no such boxes, so every run that uses it is stamped
non-compliant ("oracle perspectives (upper bound, not deployable)") and reports never rank it. A dataset without
boxes is an error, not an empty result.

A keyword gets the box of an object whose class it names (class names normalised as keywords are); a keyword
that names no object of the image gets nothing, so the bound covers the localiser, not the keyword provider.
With several objects of the class, ``instances: largest`` (default) returns the largest box, ``union`` the box
around all of them (what a ``samgeo`` ``union`` would ideally find).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rsitr_bench.api import ObjectBox, PerspectiveGeneratorSpec
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.guidance.lexicon import normalize_keyword
from rsitr_bench.harness.store import digest

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1


@dataclass
class OracleOptions:
    """Options of ``oracle-boxes``: ``instances`` picks the ``largest`` object of a class or their ``union``."""

    instances: Literal["largest", "union"] = "largest"


def _area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def oracle_box(objects: list[ObjectBox], instances: str) -> tuple[int, int, int, int]:
    """The box ``instances`` picks among the (non-empty) objects of one class."""
    if instances == "union":
        return (min(o.box[0] for o in objects), min(o.box[1] for o in objects),
                max(o.box[2] for o in objects), max(o.box[3] for o in objects))
    return max((o.box for o in objects), key=_area)


class OracleBoxesGenerator:
    """The annotated box of each keyword's object; no model, no image read."""

    def __init__(self, options: OracleOptions, env: GuidanceEnv):
        self.options = options
        self.identity = digest("oracle-boxes", VERSION, options.instances)

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        by_class: dict[str, list[ObjectBox]] = {}
        for obj in item.object_boxes():
            by_class.setdefault(normalize_keyword(obj.label), []).append(obj)
        return [Perspective(keyword, oracle_box(by_class[keyword], self.options.instances))
                for keyword in keywords if keyword in by_class]


SPEC = PerspectiveGeneratorSpec(
    name="oracle-boxes",
    factory=OracleBoxesGenerator,
    options=OracleOptions,
    description="Ground-truth box of each keyword's object (upper bound; NOT deployable, never ranked)",
    deployable=False,
)
