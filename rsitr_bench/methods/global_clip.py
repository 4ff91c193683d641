"""``global-clip``: zero-shot CLIP retrieval with one global embedding per image and per caption.

The baseline every RSITR paper reports first. It trains nothing; its scores are cosine similarities of
L2-normalised open_clip embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from rsitr_bench.api import MethodSpec, RunContext
from rsitr_bench.clip.backbones import Backbone, BackboneOptions, weights_provenance
from rsitr_bench.clip.encode import model_device
from rsitr_bench.clip.features import DEFAULT_BATCH_SIZE, FeatureCache, encode_images, encode_texts, similarity
from rsitr_bench.data.model import Split


@dataclass
class GlobalClipOptions(BackboneOptions):
    """The backbone (see :class:`~rsitr_bench.clip.backbones.BackboneOptions`) and the encoding batch size
    (another batch size than the default caches its features apart: :mod:`rsitr_bench.clip.features`)."""

    batch_size: Annotated[int, Field(ge=1)] = DEFAULT_BATCH_SIZE


class GlobalClip:
    """Zero-shot CLIP: ``fit`` does nothing, ``score`` is image-caption cosine similarity."""

    def __init__(self, options: GlobalClipOptions, train: None):
        self.options = options
        self._backbone: Backbone | None = None

    def backbone(self, device: str) -> Backbone:
        if self._backbone is None:
            self._backbone = self.options.build_backbone(device)
        return self._backbone

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> None:
        ctx.log.info("global-clip is zero-shot: nothing to fit")

    def score(self, split: Split, ctx: RunContext) -> np.ndarray | torch.Tensor:
        backbone = self.backbone(ctx.device)
        cache = FeatureCache(ctx.cache_dir)
        bs = self.options.batch_size
        images = encode_images(backbone, split, cache, ctx.log, bs, ctx.progress)
        texts = encode_texts(backbone, ctx.texts(split), cache, ctx.log, bs, ctx.progress,
                             label=f"captions of {split.dataset}/{split.name}")
        return similarity(images, texts, model_device(backbone))

    def parameter_counts(self) -> dict[str, int]:
        if self._backbone is None:
            return {}
        total = sum(p.numel() for p in self._backbone.model.parameters())
        return {"total": total, "trainable": 0}

    def weights_provenance(self) -> dict[str, Any]:
        return weights_provenance(self._backbone)


SPEC = MethodSpec(
    name="global-clip",
    factory=GlobalClip,
    options=GlobalClipOptions,
    description="Zero-shot CLIP retrieval with global image and caption embeddings (open_clip backbone).",
)
