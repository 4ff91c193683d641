"""Export perspective masks next to their image; a GeoTIFF keeps its georeference.

Remote-sensing images often come as GeoTIFFs: a mask written with the source's coordinate reference
system and affine transform overlays the source in any GIS. Other images get plain PNG masks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rsitr_bench.guidance.context import Perspective


def _georeference(image_path: Path) -> dict[str, Any] | None:
    """The CRS and transform of a georeferenced raster, or None (not a GeoTIFF, or rasterio missing)."""
    if Path(image_path).suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import rasterio
    except ImportError:
        return None
    with rasterio.open(image_path) as src:
        if src.crs is None and src.transform.is_identity:
            return None
        return {"crs": src.crs, "transform": src.transform}


def region_mask(p: Perspective, size: tuple[int, int]) -> np.ndarray:
    """The perspective's mask, or its box filled when it has none."""
    width, height = size
    if p.mask is not None:
        return np.asarray(p.mask, dtype=bool)
    mask = np.zeros((height, width), dtype=bool)
    mask[p.box[1]:p.box[3], p.box[0]:p.box[2]] = True
    return mask


def export_masks(image_path: Path, perspectives: Sequence[Perspective], out_dir: Path) -> list[Path]:
    """Write one single-band mask (255 inside) per perspective; return the files written."""
    image_path, out_dir = Path(image_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(image_path) as img:
        size = img.size
    georef = _georeference(image_path)
    written = []
    for i, p in enumerate(perspectives):
        slug = re.sub(r"[^a-z0-9]+", "-", p.keyword.lower()).strip("-") or "cell"
        mask = region_mask(p, size).astype(np.uint8) * 255
        if georef is not None:
            import rasterio

            path = out_dir / f"{image_path.stem}_{i:02d}_{slug}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=size[0], height=size[1], count=1,
                               dtype="uint8", compress="deflate", **georef) as dst:
                dst.write(mask, 1)
        else:
            path = out_dir / f"{image_path.stem}_{i:02d}_{slug}.png"
            Image.fromarray(mask).save(path)
        written.append(path)
    return written
