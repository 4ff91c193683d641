"""The perspective cache: boxes and run-length-encoded masks per (image bytes, keywords, generator).

The key holds the sha256 of the image *file*, the exact keyword list, and the generator's identity (its
configuration and model versions), so renaming a dataset reuses entries and changing a threshold or a
checkpoint does not. Masks are stored as run lengths of a row-major scan (a 256×256 blob mask is a few
dozen integers instead of a 64 KB PNG). "Nothing found" is an entry too, so it is never recomputed and
never confused with "not computed yet".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rsitr_bench.guidance.context import Perspective
from rsitr_bench.harness.store import CheckedStore, digest

#: Bump when the payload layout changes.
FORMAT = 1


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean mask scanned row by row, starting with a (possibly empty) run of False."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return ([0] if flat[0] else []) + runs.tolist()


def rle_decode(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; raises ValueError when the runs do not fill ``shape`` exactly."""
    counts = np.asarray(runs, dtype=np.int64)
    if (counts < 0).any() or int(counts.sum()) != shape[0] * shape[1]:
        raise ValueError(f"run lengths sum to {int(counts.sum())}, expected {shape[0] * shape[1]}")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape(shape)


class PerspectiveCache:
    """Perspectives of one image for one keyword list and one generator identity."""

    def __init__(self, cache_dir: Path, counters: Counter | None = None):
        self.store = CheckedStore(cache_dir, "perspectives", "perspective", counters)

    @staticmethod
    def key(image_hash: str, keywords: list[str], generator: str) -> str:
        return digest("perspectives", FORMAT, image_hash, list(keywords), generator)

    def get(self, image_hash: str, keywords: list[str], generator: str,
            size: tuple[int, int]) -> list[Perspective] | None:
        """The cached perspectives, or None when absent, corrupt, or recorded for another image."""
        width, height = size
        decoded: list[Perspective] = []

        def valid(payload: Any) -> bool:
            if (payload["image"], payload["keywords"], payload["size"]) != (image_hash, list(keywords),
                                                                           [width, height]):
                return False
            for p in payload["found"]:
                mask = None if p["mask"] is None else rle_decode(p["mask"], (height, width))
                decoded.append(Perspective(str(p["keyword"]), tuple(int(v) for v in p["box"]),
                                           float(p["score"]), mask))
            return payload["nothing_found"] == (not decoded)

        payload = self.store.get(self.key(image_hash, keywords, generator), valid)
        return None if payload is None else decoded

    def put(self, image_hash: str, keywords: list[str], generator: str, size: tuple[int, int],
            found: list[Perspective]) -> None:
        payload = {
            "image": image_hash, "keywords": list(keywords), "generator": generator, "size": list(size),
            "nothing_found": not found,
            "found": [{"keyword": p.keyword, "box": [int(v) for v in p.box], "score": float(p.score),
                       "mask": None if p.mask is None else rle_encode(p.mask)} for p in found],
        }
        self.store.put(self.key(image_hash, keywords, generator), payload)
