"""``clip-saliency``: keyword regions from the backbone's patch-text similarity, without SAM.

For each keyword, the similarity of every image patch with the keyword's text embedding is computed (see
:mod:`rsitr_bench.clip.patches`). Patches above ``threshold`` of the map's range (from its minimum
to its maximum) that are 4-connected to the best patch form the region; its patch extent, mapped back to
pixels, is the box, and the patches themselves the mask. A flat map, or a best patch below
``min_similarity``, means nothing was found for that keyword.

The quality of the regions is the backbone's: with random weights they are arbitrary (tests check the
geometry on planted similarity maps), with a CLIP trained on remote-sensing captions they follow the objects.
It is the default generator of the embedded dataset because it costs one forward pass of the backbone per
image and needs no extra model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from scipy import ndimage

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.clip.encode import DEFAULT_TEMPLATE, encode_words
from rsitr_bench.clip.patches import TokenSource, patch_text_similarity
from rsitr_bench.data.images import load_rgb
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.harness.store import digest

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 2  # 2: keywords encoded one per forward pass (batch-independent cache entries)
Similarity = Callable[[Backbone, Image.Image, torch.Tensor, TokenSource], np.ndarray]


@dataclass
class ClipSaliencyOptions:
    """Options of ``clip-saliency`` (also the localizer options of ``samgeo``).

    Attributes:
        template: the text encoded for a keyword (``{}`` is replaced by it).
        tokens: ``value`` (last block's value path, better localisation with trained CLIPs) or ``final``.
        threshold: fraction of the similarity map's range a patch must reach to join the region.
        min_similarity: cosine similarity the best patch must reach, or None to always return a region.
    """

    template: str = DEFAULT_TEMPLATE
    tokens: TokenSource = "value"
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.6
    min_similarity: float | None = None

    def __post_init__(self) -> None:
        if "{}" not in self.template:
            raise ValueError(f"template {self.template!r} must contain {{}} where the keyword goes")


@dataclass(frozen=True)
class Region:
    """One keyword's region in pixels: box, patch mask upsampled to the image, and peak similarity."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float


def region_from_map(similarity: np.ndarray, size: tuple[int, int], threshold: float,
                    min_similarity: float | None = None) -> Region | None:
    """The region of one ``[gh, gw]`` similarity map in an image of ``size = (width, height)``: the cells above
    ``threshold`` of the map's range that are 4-connected to its peak. Any grid works, the image's pixels too."""
    sim = np.asarray(similarity, dtype=np.float64)
    lo, hi = float(sim.min()), float(sim.max())
    if not np.isfinite(hi) or hi - lo < 1e-6 or (min_similarity is not None and hi < min_similarity):
        return None
    peak = np.unravel_index(int(np.argmax(sim)), sim.shape)
    components, _ = ndimage.label(sim >= lo + threshold * (hi - lo))  # 4-connected
    patches = components == components[peak]
    rows, cols = np.flatnonzero(patches.any(axis=1)), np.flatnonzero(patches.any(axis=0))
    width, height = size
    gh, gw = sim.shape
    box = (int(np.floor(cols[0] * width / gw)), int(np.floor(rows[0] * height / gh)),
           int(np.ceil((cols[-1] + 1) * width / gw)), int(np.ceil((rows[-1] + 1) * height / gh)))
    ys = np.minimum((np.arange(height) * gh) // height, gh - 1)
    xs = np.minimum((np.arange(width) * gw) // width, gw - 1)
    return Region(box, patches[np.ix_(ys, xs)], hi)


class ClipSaliencyGenerator:
    """One region per keyword from the backbone's patch-text similarity; also a localizer for ``samgeo``.

    Subclasses (``dense-clip``) change where the similarity map comes from (:meth:`similarity_maps`) and keep
    the rest: keyword encoding, map-to-region and the cache identity's recipe.

    Arguments:
        similarity: the patch-text similarity function; tests plant known maps through it.
    """

    name = "clip-saliency"
    version = VERSION

    def __init__(self, options: ClipSaliencyOptions, env: GuidanceEnv, similarity: Similarity | None = None):
        self.options = options
        self.env = env
        self.similarity = similarity
        self._text: dict[str, torch.Tensor] = {}

    @property
    def identity(self) -> str:
        options = dataclasses.asdict(self.options)
        return digest(self.name, self.version, options, self.env.backbone().identity)

    def localize(self, image: Image.Image, keywords: list[str],
                 per_keyword: int = 1) -> dict[str, list[tuple[tuple, float]]]:
        """``{keyword: [(box, score)]}``: one box per keyword (the saliency map has one peak region)."""
        return {k: [(r.box, r.score)] for k, r in self.regions(image, keywords).items()}

    def similarity_maps(self, backbone: Backbone, image: Image.Image, text: torch.Tensor) -> np.ndarray:
        """``[n_keywords, gh, gw]``: the whole image's patch grid against each keyword's text embedding."""
        return patch_text_similarity(backbone, image, text, self.options.tokens)

    def regions(self, image: Image.Image, keywords: list[str]) -> dict[str, Region]:
        backbone = self.env.backbone()
        # One keyword per forward pass: a batched matmul's last bits depend on what else is in the batch, and
        # the keywords missing here depend on which images this process saw before. Encoding each alone makes a
        # cached region a function of (image, keyword) only, so sharded and full `prepare` runs agree bit for bit.
        for keyword in keywords:
            if keyword not in self._text:
                self._text[keyword] = encode_words(backbone, [keyword], self.options.template)[0]
        text = torch.stack([self._text[k] for k in keywords])
        if self.similarity is not None:
            maps = self.similarity(backbone, image, text, self.options.tokens)
        else:
            maps = self.similarity_maps(backbone, image, text)
        found = {}
        for keyword, sim in zip(keywords, maps):
            region = region_from_map(sim, image.size, self.options.threshold, self.options.min_similarity)
            if region is not None:
                found[keyword] = region
        return found

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        image = load_rgb(item.image_path, record=item.image_name)
        return [Perspective(k, r.box, r.score, r.mask) for k, r in self.regions(image, keywords).items()]


SPEC = PerspectiveGeneratorSpec(
    name="clip-saliency",
    factory=ClipSaliencyGenerator,
    options=ClipSaliencyOptions,
    description="Keyword regions from the backbone's patch-text similarity; no SAM (embedded-data default)",
)
