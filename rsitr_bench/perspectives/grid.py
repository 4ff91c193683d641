"""``grid``: fixed crops that use no keywords, the keyword-free baseline of perspective methods.

Cells are returned row by row. With ``overlap`` each cell grows by that fraction of its size on every side
(clipped to the image), so an object on a cell border is whole in at least one crop. The service keeps at
most ``max_per_image`` of them: set it to ``rows * cols`` to keep all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from PIL import Image
from pydantic import Field

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.harness.store import digest

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1


@dataclass
class GridOptions:
    """Options of ``grid``: ``rows`` × ``cols`` cells, each grown by ``overlap`` of its size per side."""

    rows: Annotated[int, Field(ge=1)] = 2
    cols: Annotated[int, Field(ge=1)] = 2
    overlap: Annotated[float, Field(ge=0, le=1)] = 0.0


def grid_boxes(width: int, height: int, rows: int, cols: int,
               overlap: float) -> list[tuple[int, int, int, int]]:
    """The cells of a ``rows`` × ``cols`` grid over a ``width`` × ``height`` image, row by row."""
    boxes = []
    for r in range(rows):
        for c in range(cols):
            x0, x1 = c * width / cols, (c + 1) * width / cols
            y0, y1 = r * height / rows, (r + 1) * height / rows
            dx, dy = overlap * (x1 - x0), overlap * (y1 - y0)
            boxes.append((max(0, round(x0 - dx)), max(0, round(y0 - dy)),
                          min(width, round(x1 + dx)), min(height, round(y1 + dy))))
    return boxes


class GridGenerator:
    """Keyword-free crops: the same cells for every image."""

    def __init__(self, options: GridOptions, env: GuidanceEnv):
        self.options = options
        self.identity = digest("grid", VERSION, dataclasses.asdict(options))

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        with Image.open(item.image_path) as img:
            width, height = img.size
        o = self.options
        return [Perspective("", box) for box in grid_boxes(width, height, o.rows, o.cols, o.overlap)]


SPEC = PerspectiveGeneratorSpec(
    name="grid",
    factory=GridGenerator,
    options=GridOptions,
    description="Fixed rows x cols crops; uses no keywords (baseline)",
    keyword_guided=False,
)
