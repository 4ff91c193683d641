"""Batched CLIP encoding with a content-addressed feature cache.

Features are cached on disk under a key made of the backbone identity (architecture + weight hash), the
preprocessing, and the *content* of the inputs (image bytes, normalised caption text). A rerun on the same
data with the same weights reads the cache instead of encoding again, whatever the run or split is called.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rsitr_bench.atomic import write_atomic
from rsitr_bench.backbones import Backbone, file_sha256
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split


class FeatureCache:
    """``.npy`` arrays under ``<cache>/features/<key[:2]>/<key>.npy``, written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root) / "features"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a corrupt entry is recomputed, never trusted
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        write_atomic(self.path(key), lambda fh: fh.write(buf.getvalue()))


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _encode_batches(items: Sequence, encode: Callable[[Sequence], torch.Tensor], batch_size: int,
                    desc: str, progress: bool) -> np.ndarray:
    chunks = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress, unit="batch",
                          leave=False):
            feats = encode(items[start:start + batch_size]).float()
            chunks.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
    return np.concatenate(chunks, axis=0)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_images(backbone: Backbone, split: Split, cache: FeatureCache, log: logging.Logger,
                  batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """L2-normalised image embeddings ``[n_images, dim]`` in split order."""
    key = cache_key("image", backbone.identity, repr(backbone.preprocess),
                    [file_sha256(Path(p)) for p in split.image_paths])
    cached = cache.get(key)
    if cached is not None:
        log.info("Reusing cached image features for %s/%s (%d images, cache key %s)",
                 split.dataset, split.name, split.n_images, key[:12])
        return cached
    device = _device_of(backbone.model)
    records = list(zip(split.image_paths, range(split.n_images)))

    def encode(batch: Sequence) -> torch.Tensor:
        pixels = torch.stack([
            backbone.preprocess(load_rgb(Path(path), record=f"{split.dataset} {split.name} image {i}"))
            for path, i in batch])
        return backbone.model.encode_image(pixels.to(device))

    feats = _encode_batches(records, encode, batch_size, f"encode images ({split.name})", progress)
    cache.put(key, feats)
    log.info("Encoded %d images of %s/%s and cached them (key %s)", split.n_images, split.dataset, split.name,
             key[:12])
    return feats


def encode_texts(backbone: Backbone, texts: Sequence[str], cache: FeatureCache, log: logging.Logger,
                 batch_size: int = 256, progress: bool = True, label: str = "captions") -> np.ndarray:
    """L2-normalised text embeddings ``[n_texts, dim]``; ``texts`` are already normalised and prefixed."""
    key = cache_key("text", backbone.identity, list(texts))
    cached = cache.get(key)
    if cached is not None:
        log.info("Reusing cached text features for %s (%d texts, cache key %s)", label, len(texts), key[:12])
        return cached
    device = _device_of(backbone.model)

    def encode(batch: Sequence[str]) -> torch.Tensor:
        return backbone.model.encode_text(backbone.tokenizer(list(batch)).to(device))

    feats = _encode_batches(list(texts), encode, batch_size, f"encode {label}", progress)
    cache.put(key, feats)
    log.info("Encoded %d texts of %s and cached them (key %s)", len(texts), label, key[:12])
    return feats
