"""Draw what a method sees: the image, its keywords, and their masks and boxes, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rsitr_bench.guidance.context import Perspective

COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230),
)
_PANEL = 260


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def render_perspectives(image: Image.Image, keywords: Sequence[str], perspectives: Sequence[Perspective],
                        title: str = "", keyword_guided: bool = True, side: int = 384,
                        alpha: float = 0.45) -> Image.Image:
    """The image scaled to ``side`` pixels, masks tinted, boxes and keywords drawn, and a legend panel.

    Keywords without a perspective are listed as "nothing found" (or "not used" when the generator is not
    ``keyword_guided``); keyword-free perspectives (``grid``) are labelled by their cell number.
    """
    width, height = image.size
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    view = np.asarray(image.convert("RGB").resize(size, Image.NEAREST if scale >= 1 else Image.BICUBIC),
                      dtype=np.float32)
    color_of = {p.keyword or f"cell {i}": COLORS[i % len(COLORS)] for i, p in enumerate(perspectives)}
    for i, p in enumerate(perspectives):
        if p.mask is not None:
            mask = Image.fromarray(np.asarray(p.mask, dtype=np.uint8) * 255).resize(size, Image.NEAREST)
            mask = np.asarray(mask)
            tint = np.asarray(color_of[p.keyword or f"cell {i}"], dtype=np.float32)
            view[mask > 0] = (1 - alpha) * view[mask > 0] + alpha * tint
    canvas = Image.new("RGB", (size[0] + _PANEL, max(size[1], 60 + 22 * (len(keywords) + len(perspectives)))),
                       (250, 250, 250))
    canvas.paste(Image.fromarray(view.astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(14), _font(12)
    taken: list[tuple[int, int, int, int]] = []
    for i, p in enumerate(perspectives):
        label = p.keyword or f"cell {i}"
        x0, y0, x1, y1 = (round(v * scale) for v in p.box)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=color_of[label], width=2)
        tx, ty = x0 + 3, y0 + 3
        text_box = draw.textbbox((tx, ty), label, font=small)
        while any(_overlaps(text_box, t) for t in taken):  # boxes sharing a corner: stack their labels
            ty += text_box[3] - text_box[1] + 2
            text_box = draw.textbbox((tx, ty), label, font=small)
        taken.append(text_box)
        draw.rectangle(text_box, fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=color_of[label], font=small)
    x, y = size[0] + 12, 10
    if title:
        draw.text((x, y), title, fill=(0, 0, 0), font=font)
        y += 26
    found = {p.keyword: p for p in perspectives}
    entries = list(keywords) + [p.keyword or f"cell {i}" for i, p in enumerate(perspectives)
                                if p.keyword not in keywords]
    if not entries:
        draw.text((x, y), "no keywords", fill=(120, 120, 120), font=font)
    for label in entries:
        p = found.get(label)
        if p is None and not label.startswith("cell "):
            why = "nothing found" if keyword_guided else "not used"
            draw.rectangle((x, y + 3, x + 12, y + 15), outline=(150, 150, 150))
            draw.text((x + 20, y), f"{label}: {why}", fill=(120, 120, 120), font=font)
        else:
            draw.rectangle((x, y + 3, x + 12, y + 15), fill=color_of.get(label, (0, 0, 0)))
            score = f" ({p.score:.2f})" if p is not None else ""
            draw.text((x + 20, y), f"{label}{score}", fill=(0, 0, 0), font=font)
        y += 22
    return canvas


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
