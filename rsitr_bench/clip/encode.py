"""The one way rsitr-bench turns images and texts into CLIP embeddings.

Scoring a split (:mod:`rsitr_bench.clip.features`), ranking keywords and perspectives (the guidance
plugins) and scoring a model during training (:mod:`rsitr_bench.training.clip_training`) all encode batch
by batch and L2-normalise in float32 here, so a number computed by one path is the number every other path
would compute from the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from rsitr_bench.clip.backbones import Backbone

T = TypeVar("T")


def embed_batches(items: Sequence[T], encode: Callable[[Sequence[T]], torch.Tensor], batch_size: int, *,
                  to_cpu: bool = False, inference: bool = True, desc: str | None = None) -> torch.Tensor:
    """L2-normalised float32 embeddings ``[len(items), dim]`` of ``encode`` applied batch by batch.

    Arguments:
        to_cpu: move each batch to the CPU as soon as it is encoded (a whole split would not fit the GPU).
        inference: run under ``torch.inference_mode``; training code passes False (``no_grad``), because
            inference tensors may not be mixed into a later autograd graph.
        desc: a progress bar with this label; None draws none.
    """
    chunks = []
    with torch.inference_mode() if inference else torch.no_grad():
        for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=desc is None, unit="batch",
                          leave=False):
            feats = F.normalize(encode(items[start:start + batch_size]).float(), dim=-1)
            chunks.append(feats.cpu() if to_cpu else feats)
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def model_device(backbone: Backbone) -> torch.device:
    return next(backbone.model.parameters()).device


def encode_texts(backbone: Backbone, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings ``[n, dim]`` (float32, on the model's device)."""
    device = model_device(backbone)
    out = embed_batches(list(texts), lambda batch: backbone.model.encode_text(backbone.tokenizer(batch).to(device)),
                        batch_size)
    return out.to(device)


def encode_images(backbone: Backbone, images: Sequence[Image.Image]) -> torch.Tensor:
    """L2-normalised image embeddings ``[n, dim]`` through the backbone's own preprocessing, in one batch."""
    device = model_device(backbone)

    def encode(batch: Sequence[Image.Image]) -> torch.Tensor:
        return backbone.model.encode_image(torch.stack([backbone.preprocess(i.convert("RGB")) for i in batch])
                                           .to(device))

    return embed_batches(list(images), encode, max(1, len(images))).to(device)


#: The text a keyword is encoded as, unless a plugin's ``template`` option says otherwise.
DEFAULT_TEMPLATE = "a satellite image of {}."


def encode_words(backbone: Backbone, words: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """L2-normalised embeddings ``[n, dim]`` of keywords, each put in ``template`` (``{}`` is the word)."""
    return encode_texts(backbone, [template.format(w) for w in words])
