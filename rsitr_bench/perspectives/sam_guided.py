"""``samgeo``: keyword-guided SAM through segment-geospatial, one detector and one SAM encoding per image.

Per image: the localizer turns *all* the image's keywords into boxes in one call (GroundingDINO through
transformers when its weights are on the machine, ``clip-saliency`` otherwise, or samgeo's LangSAM
detector when ``groundingdino`` is installed); samgeo's SAM computes the image embedding once
(``set_image``), and every box prompt is decoded from it in one batched call. The reference pipeline
instead ran GroundingDINO and the SAM ViT-H encoder once per (caption, noun) pair, about 14 times per image.

samgeo's own ``predict`` fails for two or more pixel boxes (it hands untransformed numpy boxes to
``predict_torch``), so the boxes go to its predictor's ``predict_torch`` after the predictor's own
coordinate transform. Each mask is restricted to its box; an empty mask falls back to the box (counted as
``sam_empty_masks``). A keyword the localizer does not find gets no perspective, and an image where nothing
is found costs no SAM call at all: nothing stale is ever reused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.data.images import load_rgb
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.harness.hub import is_available
from rsitr_bench.harness.store import digest, weights_digest
from rsitr_bench.perspectives.detector import DEFAULT_DETECTOR, GroundingDinoLocalizer, LangSamLocalizer
from rsitr_bench.perspectives.saliency import ClipSaliencyGenerator, ClipSaliencyOptions
from rsitr_bench.perspectives.sam_models import (
    build_samgeo,
    count_calls,
    require_samgeo,
    resolve_sam_checkpoint,
)

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1
Localizer = Literal["auto", "grounding-dino", "clip-saliency", "langsam"]


@dataclass
class SamGeoOptions:
    """Options of ``samgeo``.

    Attributes:
        localizer: ``auto`` (GroundingDINO if its weights are local, else clip-saliency),
            ``grounding-dino``, ``clip-saliency`` or ``langsam`` (needs the groundingdino package).
        detector: GroundingDINO model id (Hugging Face cache) or local directory.
        box_threshold: detector score a box needs; text_threshold: LangSAM's phrase threshold.
        instances: ``best`` box per keyword, or the ``union`` of up to ``max_instances`` boxes and masks.
        sam_model_type: ``vit_b``, ``vit_l``, ``vit_h`` or ``rsitr-tiny-sam`` (random weights, tests).
        sam_checkpoint: the SAM file; default: samgeo's location for ``sam_model_type``.
        saliency: the clip-saliency localizer's options.
    """

    localizer: Localizer = "auto"
    detector: str = DEFAULT_DETECTOR
    box_threshold: Annotated[float, Field(ge=0, le=1)] = 0.3
    text_threshold: Annotated[float, Field(ge=0, le=1)] = 0.25
    instances: Literal["best", "union"] = "best"
    max_instances: Annotated[int, Field(ge=1)] = 8
    sam_model_type: str = "vit_b"
    sam_checkpoint: str | None = None
    saliency: ClipSaliencyOptions = field(default_factory=ClipSaliencyOptions)


class SamGeoGenerator:
    """Localizer boxes refined by samgeo's SAM, one SAM image embedding per image."""


    def __init__(self, options: SamGeoOptions, env: GuidanceEnv):
        self.options = options
        self.env = env
        self.checkpoint = resolve_sam_checkpoint(options.sam_model_type, options.sam_checkpoint,
                                                 env.cache_dir)
        self.fell_back = False
        self.localizer_name = self._choose_localizer()
        self._localizer: Any = None
        self._sam: Any = None
        self._identity: str | None = None

    def _choose_localizer(self) -> str:
        wanted = self.options.localizer
        if wanted == "auto":
            if is_available(self.options.detector):
                return "grounding-dino"
            self.env.log.info("samgeo: GroundingDINO %r is not on this machine; localizing keywords with "
                              "clip-saliency instead", self.options.detector)
            self.fell_back = True
            return "clip-saliency"
        return wanted

    def localizer(self) -> Any:
        if self._localizer is None:
            o, env = self.options, self.env
            if self.localizer_name == "grounding-dino":
                self._localizer = GroundingDinoLocalizer(o.detector, env.cache_dir, env.device,
                                                         o.box_threshold, env.counters)
            elif self.localizer_name == "langsam":
                self._localizer = LangSamLocalizer(o.sam_model_type, self.checkpoint, o.box_threshold,
                                                   o.text_threshold, env.counters)
            else:
                self._localizer = ClipSaliencyGenerator(o.saliency, env)
        return self._localizer

    @property
    def identity(self) -> str:
        if self._identity is None:
            loc = self.localizer()
            version = getattr(loc, "version", None) or loc.identity
            self._identity = digest("samgeo", VERSION, dataclasses.asdict(self.options), self.localizer_name,
                                    version, weights_digest(self.checkpoint, self.env.cache_dir))
        return self._identity

    def sam(self) -> Any:
        if self._sam is None:
            self._sam = build_samgeo(self.options.sam_model_type, self.checkpoint, self.env.device,
                                     automatic=False)
            count_calls(self._sam.predictor.model.image_encoder, self.env.counters, "sam_image_encoder_calls")
        return self._sam

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        image = load_rgb(item.image_path, record=item.image_name)
        self.env.counters["localizer_fallbacks"] += self.fell_back
        per_keyword = self.options.max_instances if self.options.instances == "union" else 1
        located = self.localizer().localize(image, keywords, per_keyword)
        prompts = [(k, box, score) for k in keywords for box, score in located.get(k, [])]
        if not prompts:
            return []
        masks = self.refine(image, [box for _, box, _ in prompts])
        return merge_instances(prompts, masks)

    def refine(self, image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
        """SAM masks ``[n, H, W]`` for pixel boxes, from a single image embedding, each clipped to its box."""
        sam = self.sam()
        pixels = np.asarray(image)
        sam.set_image(pixels)
        predictor = sam.predictor
        prompts = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=predictor.device)
        prompts = predictor.transform.apply_boxes_torch(prompts, pixels.shape[:2])
        with torch.inference_mode():
            masks, _, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=prompts,
                                                  multimask_output=False)
        masks = masks[:, 0].cpu().numpy().astype(bool)
        inside = np.zeros_like(masks)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            inside[i, y0:y1, x0:x1] = True
        masks &= inside
        empty = ~masks.any(axis=(1, 2))
        self.env.counters["sam_empty_masks"] += int(empty.sum())
        masks[empty] = inside[empty]
        return masks


def merge_instances(prompts: list[tuple[str, tuple[int, int, int, int], float]],
                    masks: np.ndarray) -> list[Perspective]:
    """One perspective per keyword: the union of its instances' masks, the box around their boxes."""
    out: dict[str, Perspective] = {}
    for (keyword, box, score), mask in zip(prompts, masks):
        if keyword in out:
            p = out[keyword]
            union = (min(p.box[0], box[0]), min(p.box[1], box[1]),
                     max(p.box[2], box[2]), max(p.box[3], box[3]))
            out[keyword] = Perspective(keyword, union, max(p.score, score), p.mask | mask)
        else:
            out[keyword] = Perspective(keyword, tuple(int(v) for v in box), float(score), mask)
    return list(out.values())


def make_samgeo(options: SamGeoOptions, env: GuidanceEnv) -> SamGeoGenerator:
    require_samgeo()
    return SamGeoGenerator(options, env)


SPEC = PerspectiveGeneratorSpec(
    name="samgeo",
    factory=make_samgeo,
    options=SamGeoOptions,
    description="Keyword boxes (GroundingDINO or clip-saliency) refined by samgeo's SAM, 1 encoding/image",
    counters=("localizer_fallbacks", "detector_calls", "sam_image_encoder_calls"),
)
