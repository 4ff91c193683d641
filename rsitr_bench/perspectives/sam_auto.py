"""``sam-auto``: SAM's automatic masks (through samgeo), ranked by keyword similarity.

SAM segments the whole image from a grid of point prompts (one image embedding); the box of each of the
``max_masks`` most confident masks is cropped and encoded with the method's backbone, and every keyword
takes the mask whose crop is most similar to its text embedding. No detector is needed, at the price of a
grid of decoder calls per image and of masks that follow SAM's notion of an object rather than the keyword's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.clip.encode import DEFAULT_TEMPLATE, encode_images, encode_words
from rsitr_bench.data.images import load_rgb
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.harness.store import digest, weights_digest
from rsitr_bench.perspectives.sam_models import (
    build_samgeo,
    count_calls,
    require_samgeo,
    resolve_sam_checkpoint,
)

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1


@dataclass
class SamAutoOptions:
    """Options of ``sam-auto``.

    Attributes:
        sam_model_type, sam_checkpoint: as for ``samgeo``.
        points_per_side, pred_iou_thresh, stability_score_thresh: SAM's automatic mask generator settings.
        max_masks: the most confident masks compared with the keywords.
        min_area: smallest mask kept, as a fraction of the image.
        template: the text encoded for a keyword; min_similarity: the least crop-keyword similarity kept.
    """

    sam_model_type: str = "vit_b"
    sam_checkpoint: str | None = None
    points_per_side: Annotated[int, Field(ge=1)] = 16
    pred_iou_thresh: Annotated[float, Field(ge=0, le=1)] = 0.88
    stability_score_thresh: Annotated[float, Field(ge=0, le=1)] = 0.95
    max_masks: Annotated[int, Field(ge=1)] = 32
    min_area: Annotated[float, Field(ge=0, le=1)] = 0.001
    template: str = DEFAULT_TEMPLATE
    min_similarity: float | None = None


class SamAutoGenerator:
    """Automatic SAM masks, each keyword assigned its most similar mask."""


    def __init__(self, options: SamAutoOptions, env: GuidanceEnv):
        self.options = options
        self.env = env
        self.checkpoint = resolve_sam_checkpoint(options.sam_model_type, options.sam_checkpoint,
                                                 env.cache_dir)
        self._sam: Any = None

    @property
    def identity(self) -> str:
        return digest("sam-auto", VERSION, dataclasses.asdict(self.options), self.env.backbone().identity,
                      weights_digest(self.checkpoint, self.env.cache_dir))

    def sam(self) -> Any:
        if self._sam is None:
            o = self.options
            kwargs = {"points_per_side": o.points_per_side, "pred_iou_thresh": o.pred_iou_thresh,
                      "stability_score_thresh": o.stability_score_thresh}
            self._sam = build_samgeo(o.sam_model_type, self.checkpoint, self.env.device, automatic=True,
                                     sam_kwargs=kwargs)
            count_calls(self._sam.sam.image_encoder, self.env.counters, "sam_image_encoder_calls")
        return self._sam

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        image = load_rgb(item.image_path, record=item.image_name)
        width, height = image.size
        masks = self.sam().mask_generator.generate(np.asarray(image))
        masks = [m for m in masks if m["area"] >= self.options.min_area * width * height]
        masks = sorted(masks, key=lambda m: -float(m["predicted_iou"]))[:self.options.max_masks]
        if not masks:
            return []
        boxes = [(int(x), int(y), int(x + max(w, 1)), int(y + max(h, 1)))
                 for x, y, w, h in (m["bbox"] for m in masks)]
        backbone = self.env.backbone()
        crops = encode_images(backbone, [image.crop(b) for b in boxes])
        text = encode_words(backbone, keywords, self.options.template)
        similarity = (text @ crops.T).cpu().numpy()
        out = []
        for k, keyword in enumerate(keywords):
            best = int(np.argmax(similarity[k]))
            if self.options.min_similarity is None or similarity[k, best] >= self.options.min_similarity:
                out.append(Perspective(keyword, boxes[best], float(similarity[k, best]),
                                       np.asarray(masks[best]["segmentation"], dtype=bool)))
        return out


def make_sam_auto(options: SamAutoOptions, env: GuidanceEnv) -> SamAutoGenerator:
    require_samgeo()
    return SamAutoGenerator(options, env)


SPEC = PerspectiveGeneratorSpec(
    name="sam-auto",
    factory=make_sam_auto,
    options=SamAutoOptions,
    description="SAM automatic masks (samgeo) ranked by keyword similarity with the backbone",
    counters=("sam_image_encoder_calls",),
)
