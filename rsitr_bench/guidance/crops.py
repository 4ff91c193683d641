"""Sub-images of an image for its perspectives, as a method encodes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

from rsitr_bench.guidance.context import Perspective

CropMode = Literal["crop", "masked"]


def crop_perspectives(image: Image.Image, perspectives: Sequence[Perspective],
                      mode: CropMode = "crop") -> list[Image.Image]:
    """One RGB sub-image per perspective.

    Modes:
        ``crop``: the perspective's box cut out of the image (the object at the encoder's full resolution).
        ``masked``: the whole image with everything outside the mask black, as the reference's
            ``*_blackbg.png`` sub-images; a perspective without a mask keeps its box.
    """
    if mode not in ("crop", "masked"):
        raise ValueError(f"unknown crop mode {mode!r}; use 'crop' or 'masked'")
    image = image.convert("RGB")
    width, height = image.size
    out = []
    for p in perspectives:
        x0, y0 = min(max(0, int(p.box[0])), width - 1), min(max(0, int(p.box[1])), height - 1)
        x1, y1 = max(x0 + 1, min(width, int(p.box[2]))), max(y0 + 1, min(height, int(p.box[3])))
        if mode == "crop":
            out.append(image.crop((x0, y0, x1, y1)))
            continue
        keep = np.zeros((height, width), dtype=bool)
        if p.mask is not None and np.asarray(p.mask).shape == (height, width):
            keep = np.asarray(p.mask, dtype=bool)
        else:
            keep[y0:y1, x0:x1] = True
        pixels = np.asarray(image).copy()
        pixels[~keep] = 0
        out.append(Image.fromarray(pixels))
    return out
