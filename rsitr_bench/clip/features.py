"""Batched CLIP encoding with a content-addressed feature cache.

Features are cached on disk under a key made of the backbone identity (architecture + weight hash), the
preprocessing, and the *content* of the inputs (image bytes, normalised caption text). A rerun on the same
data with the same weights reads the cache instead of encoding again, whatever the run or split is called.

**The batch size is part of the key, except at the default.** A batched matrix product's last bits depend
on how many rows it multiplies, so encoding in batches of 1, 7 and 64 gives features that differ in the
last float32 bit (measured with ``rsitr-tiny`` on CPU: up to 7.5e-8, in most rows). Encoding every input
alone would make them batch-invariant, but costs a forward pass per input (``rsitr-tiny``, 70 images, one
CPU thread: 0.44 s instead of 0.14 s, benchmarks/bench_features.py; far more for a ViT-B on a GPU) and
would change the features, hence the metrics, of every run recorded so far. So the cache keeps each
batching apart: the default batch size (:data:`DEFAULT_BATCH_SIZE`) keeps the keys it always had, another
one adds ``batch_size=N`` (tests/test_features_cache.py). The *effective* batch size ``min(batch_size, n)``
is what counts: when every input fits one batch, any batch size encodes the very same batch and shares the
entry.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.clip.encode import embed_batches, model_device
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.harness.store import SPACED, ContentStore, digest, file_sha256
from rsitr_bench.metrics.device import full_float32


class FeatureCache:
    """``.npy`` arrays under ``<cache>/features/<key[:2]>/<key>.npy``, written atomically and durably."""

    def __init__(self, root: Path):
        self.files = ContentStore(root, "features", ".npy", durable=True)

    def path(self, key: str) -> Path:
        return self.files.path(key)

    def get(self, key: str) -> np.ndarray | None:
        try:
            data = self.files.read(key)
            return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError):
            self.files.discard(key)  # a corrupt entry is recomputed, never trusted
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        self.files.write(key, buf.getvalue())


#: The batch size whose features are cached under the plain key (global-clip's default).
DEFAULT_BATCH_SIZE = 64


def cache_key(*parts: object) -> str:
    """The feature store's key: :func:`~rsitr_bench.harness.store.digest` in the store's own encoding."""
    return digest(*parts, encoding=SPACED)


def batching(batch_size: int, n: int) -> list[str]:
    """The key part that tells batchings apart (module docstring): none where the batches are the default's."""
    if min(batch_size, n) == min(DEFAULT_BATCH_SIZE, n):
        return []
    return [f"batch_size={min(batch_size, n)}"]


def encode_images(backbone: Backbone, split: Split, cache: FeatureCache, log: logging.Logger,
                  batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> np.ndarray:
    """L2-normalised image embeddings ``[n_images, dim]`` in split order."""
    key = cache_key("image", backbone.identity, repr(backbone.preprocess),
                    [file_sha256(Path(p)) for p in split.image_paths], *batching(batch_size, split.n_images))
    cached = cache.get(key)
    if cached is not None:
        log.info("Reusing cached image features for %s/%s (%d images, cache key %s)",
                 split.dataset, split.name, split.n_images, key[:12])
        return cached
    device = model_device(backbone)
    records = list(zip(split.image_paths, range(split.n_images)))

    def encode(batch: Sequence) -> torch.Tensor:
        pixels = torch.stack([
            backbone.preprocess(load_rgb(Path(path), record=f"{split.dataset} {split.name} image {i}"))
            for path, i in batch])
        return backbone.model.encode_image(pixels.to(device))

    feats = embed_batches(records, encode, batch_size, to_cpu=True,
                          desc=f"encode images ({split.name})" if progress else None).numpy()
    cache.put(key, feats)
    log.info("Encoded %d images of %s/%s and cached them (key %s)", split.n_images, split.dataset, split.name,
             key[:12])
    return feats


def encode_texts(backbone: Backbone, texts: Sequence[str], cache: FeatureCache, log: logging.Logger,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True, label: str = "captions"
                 ) -> np.ndarray:
    """L2-normalised text embeddings ``[n_texts, dim]``; ``texts`` are already normalised and prefixed."""
    key = cache_key("text", backbone.identity, list(texts), *batching(batch_size, len(texts)))
    cached = cache.get(key)
    if cached is not None:
        log.info("Reusing cached text features for %s (%d texts, cache key %s)", label, len(texts), key[:12])
        return cached
    device = model_device(backbone)

    def encode(batch: Sequence[str]) -> torch.Tensor:
        return backbone.model.encode_text(backbone.tokenizer(list(batch)).to(device))

    feats = embed_batches(list(texts), encode, batch_size, to_cpu=True,
                          desc=f"encode {label}" if progress else None).numpy()
    cache.put(key, feats)
    log.info("Encoded %d texts of %s and cached them (key %s)", len(texts), label, key[:12])
    return feats


def similarity(images: np.ndarray | torch.Tensor, texts: np.ndarray | torch.Tensor,
               device: torch.device | str) -> np.ndarray | torch.Tensor:
    """The similarity matrix ``images @ texts.T`` of L2-normalised embeddings, computed where it is scored.

    On a GPU the embeddings go to the device (they are small: 100,000 x 512 float32 is 200 MB), the product runs
    there in full float32 (never TF32, which would round scores to 10 bits and manufacture ties) and the matrix
    stays there: ``retrieval_metrics`` counts ranks on the device and only the counters come back
    (rsitr_bench/metrics/device.py). Elsewhere it is the product on the CPU, returned as NumPy: bit for bit the
    scores that runs recorded before the device path existed.
    """
    device = torch.device(device)
    if device.type != "cuda":
        product = images @ texts.T
        return product.numpy() if isinstance(product, torch.Tensor) else product
    with full_float32():
        return torch.as_tensor(images, device=device) @ torch.as_tensor(texts, device=device).T
