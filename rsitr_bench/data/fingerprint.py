"""Split fingerprints: what makes two results comparable.

Two runs may only share a table column when they were evaluated on the same content. The fingerprint is a
sha256 over the sorted (image file name, normalised caption) pairs, so it does not depend on the order or
the annotation format a split was read from.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from rsitr_bench.data.text import normalize_text

if TYPE_CHECKING:
    from rsitr_bench.data.model import Split


def split_fingerprint(split: Split, normalization: str = "none") -> dict:
    """Return {images, captions, normalization, sha256} for a split."""
    pairs = sorted(
        (split.image_names[owner], normalize_text(text, normalization))
        for text, owner in zip(split.captions, split.caption_image.tolist())
    )
    digest = hashlib.sha256()
    for name, text in pairs:
        digest.update(name.encode("utf-8") + b"\x00" + text.encode("utf-8") + b"\x01")
    return {
        "images": split.n_images,
        "captions": split.n_captions,
        "normalization": normalization,
        "sha256": digest.hexdigest(),
    }
