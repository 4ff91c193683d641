"""``dense-clip``: keyword regions from a dense, sliding-window patch-text similarity map (MaskCLIP family).

``clip-saliency`` resizes the whole image to the backbone's input, so its map has the backbone's patch grid
(8 × 8 for the embedded ``rsitr-tiny``: one cell per 16 pixels of a 128-pixel synthetic-rs image, while the
median object there is about 14 pixels wide). ``dense-clip`` slides square windows of ``window`` × the image's
shorter side over the image every ``stride`` × window, resizes each window to the backbone's input and
compares its patch tokens with the keyword's text embedding (see :mod:`rsitr_bench.clip.patches`). Each
window's map is upsampled bilinearly to its pixels and overlapping windows are averaged, giving one map per
keyword at the image's own resolution. The region is then made as ``clip-saliency`` makes it: pixels above
``threshold`` of the map's range, 4-connected to the peak.

``reference: lexicon`` subtracts the mean text embedding of the built-in object lexicon from each keyword's
before comparing. A CLIP's text embeddings share a large common direction, so a raw map mostly says where
the image looks like *any* object; what is left after the subtraction is what tells this keyword from the
other objects. With the embedded backbone it doubles the mean IoU.

Window and stride are fractions, not pixels, so a setting means the same on 128-pixel and 600-pixel images,
and the number of windows does not grow with the image. All windows of an image go through the backbone as
one batch: one forward per image. The defaults (16 side-by-side windows) were chosen on synthetic-rs validation
images with the embedded backbone, within the main job's time budget (docs/guidance.md, "dense-clip"); the
MaskCLIP value path (``tokens: value``) localised worse than the final tokens there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.clip.encode import encode_words
from rsitr_bench.clip.patches import TokenSource, sliding_window_similarity
from rsitr_bench.guidance.lexicon import OBJECT_NOUNS
from rsitr_bench.harness.store import digest
from rsitr_bench.perspectives.saliency import ClipSaliencyGenerator, ClipSaliencyOptions, Similarity

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1


@dataclass
class DenseClipOptions(ClipSaliencyOptions):
    """Options of ``dense-clip``: those of ``clip-saliency``, with their own defaults, plus the windows.

    Attributes:
        tokens: ``final`` (the transformer's last patch tokens) or ``value`` (the MaskCLIP value path).
        threshold: fraction of the dense map's range a pixel must reach to join the region.
        window: side of the square windows, as a fraction of the image's shorter side (1: one window).
        stride: step between windows, as a fraction of the window.
        reference: ``lexicon`` (subtract the object lexicon's mean text embedding) or ``none``.
    """

    tokens: TokenSource = "final"
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.75
    window: Annotated[float, Field(gt=0, le=1)] = 0.25
    stride: Annotated[float, Field(gt=0, le=1)] = 1.0
    reference: Literal["lexicon", "none"] = "lexicon"


class DenseClipGenerator(ClipSaliencyGenerator):
    """One region per keyword from the sliding-window similarity map (see the module docstring)."""

    name = "dense-clip"
    version = VERSION
    options: DenseClipOptions

    def __init__(self, options: DenseClipOptions, env: GuidanceEnv, similarity: Similarity | None = None):
        super().__init__(options, env, similarity)
        self._lexicon_mean: torch.Tensor | None = None

    @property
    def identity(self) -> str:
        """Options, backbone and, when it is the reference, the lexicon: a changed word list changes the maps."""
        lexicon = list(OBJECT_NOUNS) if self.options.reference == "lexicon" else []
        return digest(self.name, self.version, dataclasses.asdict(self.options), lexicon,
                      self.env.backbone().identity)

    def similarity_maps(self, backbone: Backbone, image: Image.Image, text: torch.Tensor) -> np.ndarray:
        """``[n_keywords, height, width]``: the stitched window maps, at the image's resolution."""
        o = self.options
        if o.reference == "lexicon":
            text = text - self.lexicon_mean(backbone)
        window = max(1, round(o.window * min(image.size)))
        return sliding_window_similarity(backbone, image, text, o.tokens, window, max(1, round(o.stride * window)))

    def lexicon_mean(self, backbone: Backbone) -> torch.Tensor:
        """The mean of the object lexicon's text embeddings, each word encoded alone (as keywords are)."""
        if self._lexicon_mean is None:
            words = [encode_words(backbone, [word], self.options.template)[0] for word in OBJECT_NOUNS]
            self._lexicon_mean = torch.stack(words).mean(0)
        return self._lexicon_mean


SPEC = PerspectiveGeneratorSpec(
    name="dense-clip",
    factory=DenseClipGenerator,
    options=DenseClipOptions,
    description="Keyword regions from a sliding-window patch-text similarity map at image resolution; no SAM",
)
