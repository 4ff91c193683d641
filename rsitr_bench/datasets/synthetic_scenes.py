"""Procedural overhead scenes for ``synthetic-rs``: a land-cover background plus countable, coloured objects.

Everything is rasterised with numpy masks on pixel centres rather than with a drawing library, so the pixels
depend only on the seeded generator and on numpy arithmetic. Geometry is designed for a 128-pixel image and
scaled to the requested size; objects are kept at least ~7 design pixels wide so they survive a resize to the
64-pixel input of the tiny CLIP backbone.

Each object's box is the bounding box of the pixels that were actually painted for it (never a planned
footprint), so boxes are tight and can be checked against the image. Boxes are ``[x0, y0, x1, y1]`` with
``x1``/``y1`` exclusive: the object covers pixel columns ``x0 <= x < x1``.

``synthetic-rs-fine`` (:mod:`rsitr_bench.datasets.synthetic_fine_scenes`) draws its scenes with the same
:func:`render_background`, :class:`Canvas` and sprites, the sprites far smaller.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

RGB = tuple[float, float, float]

#: Colour names used in captions, with the RGB value an object of that colour is painted in (before a
#: small per-object jitter of at most ``COLOR_JITTER`` per channel).
PALETTE: dict[str, RGB] = {
    "red": (190.0, 45.0, 40.0),
    "blue": (45.0, 110.0, 210.0),
    "white": (236.0, 236.0, 232.0),
    "grey": (166.0, 166.0, 172.0),
    "brown": (125.0, 80.0, 45.0),
    "yellow": (226.0, 196.0, 50.0),
    "green": (50.0, 140.0, 70.0),
    "orange": (230.0, 125.0, 40.0),
}
_BRIGHTNESS_JITTER, _HUE_JITTER = 6, 4
COLOR_JITTER = _BRIGHTNESS_JITTER + _HUE_JITTER

BACKGROUNDS = ("forest", "farmland", "bare land", "sea", "urban area", "grassland")

# A layer's paint: an RGB colour, a multiplier of what is below (shadows < 1 < wakes), or per-pixel colours.
Paint = RGB | float | np.ndarray
# (mask over the window, paint, whether the pixels belong to the object's box)
Layer = tuple[np.ndarray, Paint, bool]
Painter = Callable[[np.ndarray, np.ndarray, float, float], list[Layer]]

_SHADOW = 0.55
_WATER = (48.0, 92.0, 128.0)
_ASPHALT = (84.0, 85.0, 90.0)
_CAR_COLORS = np.array([[200, 200, 200], [40, 40, 45], [170, 40, 35], [50, 80, 160], [220, 220, 215]], float)


@dataclass(frozen=True)
class SceneObject:
    """One annotated object: its caption noun, its colour name (None where colour is not an attribute)."""

    label: str
    color: str | None
    box: tuple[int, int, int, int]


@dataclass
class Scene:
    """A rendered scene and the facts its captions are written from."""

    background: str
    image: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)
    coast: bool = False


@dataclass(frozen=True)
class Sprite:
    """An object ready to be placed: half-extents of its footprint (shadow, wake included) and a painter."""

    half_w: float
    half_h: float
    paint: Painter


@dataclass(frozen=True)
class _Kind:
    """What may appear where: colours, how typical it is per background, terrain and a group's count range."""

    colors: tuple[str, ...] | None
    backgrounds: dict[str, float]
    on_water: bool
    counts: tuple[int, int]
    sprite: Callable[[np.random.Generator, float, RGB], Sprite]


# ---------------------------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (read-only, shared between scenes of one size)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    ys.flags.writeable = xs.flags.writeable = False
    return xs, ys


def _local(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, angle: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) a shape heading ``angle`` radians from the x axis."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    return dx * c + dy * s, dy * c - dx * s


def _rect(xs, ys, cx: float, cy: float, length: float, width: float, angle: float = 0.0) -> np.ndarray:
    u, v = _local(xs, ys, cx, cy, angle)
    return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)


def _ellipse(xs, ys, cx: float, cy: float, ru: float, rv: float, angle: float = 0.0) -> np.ndarray:
    u, v = _local(xs, ys, cx, cy, angle)
    return (u / ru) ** 2 + (v / rv) ** 2 <= 1.0


def _polygon(xs, ys, cx: float, cy: float, angle: float, points: list[tuple[float, float]]) -> np.ndarray:
    """A convex polygon given by its corners (in order) in the shape's (u, v) frame."""
    u, v = _local(xs, ys, cx, cy, angle)
    sides = []
    for (u0, v0), (u1, v1) in zip(points, points[1:] + points[:1], strict=True):
        sides.append((u1 - u0) * (v - v0) - (v1 - v0) * (u - u0))
    cross = np.stack(sides)
    return (cross >= 0).all(axis=0) | (cross <= 0).all(axis=0)


def jitter(rng: np.random.Generator, rgb: RGB) -> RGB:
    """Vary brightness more than hue, so a white tank never turns pink."""
    brightness = rng.integers(-_BRIGHTNESS_JITTER, _BRIGHTNESS_JITTER + 1)
    d = brightness + rng.integers(-_HUE_JITTER, _HUE_JITTER + 1, size=3)
    return (float(rgb[0] + d[0]), float(rgb[1] + d[1]), float(rgb[2] + d[2]))


def _scale(rgb: RGB, k: float) -> RGB:
    return (rgb[0] * k, rgb[1] * k, rgb[2] * k)


# ---------------------------------------------------------------------------------------------- textures


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice interpolated with smoothstep weights."""
    lattice = rng.random((cells + 1, cells + 1))
    t = (np.arange(size) + 0.5) * cells / size
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    f = f * f * (3 - 2 * f)
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _mix(a: RGB, b: RGB, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours by weights ``t`` in [0, 1], in float32 for speed."""
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a32 + (b32 - a32) * t.astype(np.float32)[..., None]


def _forest(rng, size):
    coarse, canopy = _value_noise(rng, size, 5), _value_noise(rng, size, max(4, size // 4))
    return _mix((28, 62, 30), (78, 118, 52), 0.45 * coarse + 0.55 * canopy)


def _farmland(rng, size):
    colors = [(150, 170, 80), (192, 176, 112), (118, 150, 68), (165, 132, 88), (204, 192, 124)]
    img = np.zeros((size, size, 3), np.float32)
    xs, ys = _grid(size)
    x_cuts = _cuts(rng, size, rng.integers(2, 5))
    for x0, x1 in zip(x_cuts[:-1], x_cuts[1:], strict=True):
        y_cuts = _cuts(rng, size, rng.integers(2, 5))
        for y0, y1 in zip(y_cuts[:-1], y_cuts[1:], strict=True):
            if y1 <= y0 or x1 <= x0:
                continue
            base = np.asarray(colors[rng.integers(len(colors))], float)
            along = xs[y0:y1, x0:x1] if rng.random() < 0.5 else ys[y0:y1, x0:x1]
            stripes = np.sin(along * 2 * math.pi / (rng.uniform(3, 5) * size / 128))
            img[y0:y1, x0:x1] = base + 9 * stripes[..., None]
            img[y0:y1, x0] *= 0.8
            img[y0, x0:x1] *= 0.8
    return img + 12 * (_value_noise(rng, size, 6)[..., None] - 0.5)


def _cuts(rng: np.random.Generator, size: int, parts: int) -> list[int]:
    inner = np.sort(rng.uniform(0.15, 0.85, parts - 1)) * size
    return [0, *(int(c) for c in inner), size]


def _bare_land(rng, size):
    n = 0.6 * _value_noise(rng, size, 4) + 0.4 * _value_noise(rng, size, 16)
    return _mix((170, 140, 102), (214, 188, 146), n)


def _sea(rng, size):
    xs, ys = _grid(size)
    angle = rng.uniform(0, math.pi)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * 0.9 * 128 / size
    waves = np.sin(phase + 6 * _value_noise(rng, size, 4))
    return _mix((26, 62, 104), (46, 90, 132), 0.7 * _value_noise(rng, size, 5) + 0.3 * (waves + 1) / 2)


def _urban(rng, size):
    img = _mix((92, 92, 96), (122, 122, 126), _value_noise(rng, size, 8))
    for _ in range(rng.integers(4, 9)):
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(size // 8, size // 3, 2)
        img[y0:y0 + h, x0:x0 + w] += rng.uniform(-14, 14)
    return img


def _grassland(rng, size):
    n = 0.6 * _value_noise(rng, size, 5) + 0.4 * _value_noise(rng, size, 20)
    return _mix((96, 140, 62), (140, 178, 90), n)


_TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "forest": _forest,
    "farmland": _farmland,
    "bare land": _bare_land,
    "sea": _sea,
    "urban area": _urban,
    "grassland": _grassland,
}


# ----------------------------------------------------------------------------------------------- sprites


def _building(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    w, h = rng.uniform(10, 22, 2) * s
    off = 2 * s
    ridge_along_x = w >= h

    def paint(xs, ys, cx, cy):
        ridge = (_rect(xs, ys, cx, cy, w - 2 * s, s) if ridge_along_x
                 else _rect(xs, ys, cx, cy, s, h - 2 * s))
        return [(_rect(xs, ys, cx + off, cy + off, w, h), _SHADOW, False),
                (_rect(xs, ys, cx, cy, w, h), _scale(rgb, 0.72), True),
                (_rect(xs, ys, cx, cy, w - 2 * s, h - 2 * s), rgb, True),
                (ridge, _scale(rgb, 0.86), True)]

    return Sprite(w / 2 + off, h / 2 + off, paint)


def _tree(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    r = rng.uniform(3.5, 6.0) * s
    crown = jitter(rng, (40.0, 92.0, 38.0))

    def paint(xs, ys, cx, cy):
        return [(_ellipse(xs, ys, cx + 1.5 * s, cy + 1.5 * s, r, r), _SHADOW, False),
                (_ellipse(xs, ys, cx, cy, r, r), crown, True),
                (_ellipse(xs, ys, cx - r / 3, cy - r / 3, r / 2, r / 2), _scale(crown, 1.3), True)]

    return Sprite(r + 1.5 * s, r + 1.5 * s, paint)


def _plane(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    length = rng.uniform(20, 30) * s
    span = length * rng.uniform(0.85, 1.0)
    heading = rng.integers(8) * math.pi / 4
    L, S = length, span / 2
    wing = [(0.10 * L, 0.0), (-0.16 * L, S), (-0.27 * L, S), (-0.14 * L, 0.0)]
    tail = [(-0.36 * L, 0.0), (-0.44 * L, 0.18 * L), (-0.49 * L, 0.18 * L), (-0.46 * L, 0.0)]
    off = 2 * s

    def shapes(xs, ys, cx, cy):
        body = _ellipse(xs, ys, cx, cy, L / 2, max(0.07 * L, 1.2 * s), heading)
        for part in (wing, tail):
            body |= _polygon(xs, ys, cx, cy, heading, part)
            body |= _polygon(xs, ys, cx, cy, heading, [(u, -v) for u, v in part])
        return body

    def paint(xs, ys, cx, cy):
        return [(shapes(xs, ys, cx + off, cy + off), _SHADOW, False), (shapes(xs, ys, cx, cy), rgb, True)]

    half = max(L, span) / 2 + off + 1
    return Sprite(half, half, paint)


def _ship(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    length = rng.uniform(16, 28) * s
    beam = length * rng.uniform(0.24, 0.32)
    heading = rng.uniform(0, 2 * math.pi)
    wake = rng.random() < 0.5
    deck = _scale(rgb, 0.7) if sum(rgb) > 500 else PALETTE["white"]
    reach = length * (1.0 if wake else 0.5) + 2 * s

    def paint(xs, ys, cx, cy):
        c, si = math.cos(heading), math.sin(heading)
        layers: list[Layer] = []
        if wake:
            layers.append((_ellipse(xs, ys, cx - 0.72 * length * c, cy - 0.72 * length * si,
                                    0.3 * length, beam * 0.45, heading), 1.45, False))
        hull = (length / 2, beam / 2, heading)
        layers += [(_ellipse(xs, ys, cx + 1.5 * s, cy + 1.5 * s, *hull), _SHADOW, False),
                   (_ellipse(xs, ys, cx, cy, *hull), rgb, True),
                   (_rect(xs, ys, cx - 0.2 * length * c, cy - 0.2 * length * si, 0.25 * length, 0.55 * beam,
                          heading), deck, True)]
        return layers

    return Sprite(reach, reach, paint)


def _storage_tank(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    r = rng.uniform(4.5, 8.5) * s
    off = 1.5 * s

    def paint(xs, ys, cx, cy):
        return [(_ellipse(xs, ys, cx + off, cy + off, r, r), _SHADOW, False),
                (_ellipse(xs, ys, cx, cy, r, r), _scale(rgb, 0.75), True),
                (_ellipse(xs, ys, cx, cy, r - s, r - s), rgb, True),
                (_ellipse(xs, ys, cx, cy, 0.3 * r, 0.3 * r), _scale(rgb, 0.85), True)]

    return Sprite(r + off, r + off, paint)


def _court(length: float, width: float, rgb: RGB, vertical: bool, basketball: bool, s: float) -> Sprite:
    """A sports court: coloured surface, white outline, centre line (and centre circle for basketball)."""
    angle = math.pi / 2 if vertical else 0.0

    def paint(xs, ys, cx, cy):
        layers: list[Layer] = [
            (_rect(xs, ys, cx, cy, length + 3 * s, width + 3 * s, angle), _scale(rgb, 0.8), True),
            (_rect(xs, ys, cx, cy, length, width, angle), PALETTE["white"], True),
            (_rect(xs, ys, cx, cy, length - 2 * s, width - 2 * s, angle), rgb, True),
            (_rect(xs, ys, cx, cy, s, width, angle), PALETTE["white"], True),
        ]
        if basketball:
            ring = _ellipse(xs, ys, cx, cy, 0.22 * width, 0.22 * width)
            ring &= ~_ellipse(xs, ys, cx, cy, 0.22 * width - s, 0.22 * width - s)
            layers.append((ring, PALETTE["white"], True))
        return layers

    half_l, half_w = (length + 3 * s) / 2 + 1, (width + 3 * s) / 2 + 1
    return Sprite(half_w, half_l, paint) if vertical else Sprite(half_l, half_w, paint)


def _tennis_court(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    return _court(rng.uniform(18, 23) * s, rng.uniform(9, 12) * s, rgb, rng.random() < 0.5, False, s)


def _basketball_court(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    return _court(rng.uniform(21, 26) * s, rng.uniform(12, 15) * s, rgb, rng.random() < 0.5, True, s)


def _parking_lot(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    w, h = rng.uniform(20, 32) * s, rng.uniform(14, 22) * s
    slot = 3.6 * s
    n_slots = int(w // slot) + 1
    cars = np.where(rng.random((2, n_slots)) < 0.6, rng.integers(len(_CAR_COLORS), size=(2, n_slots)), -1)

    def paint(xs, ys, cx, cy):
        lot = _rect(xs, ys, cx, cy, w, h)
        col = np.clip(((xs - (cx - w / 2)) // slot).astype(int), 0, n_slots - 1)
        row = (ys >= cy).astype(int)
        in_slot = ((xs - (cx - w / 2)) % slot) > 0.9 * s
        in_row = np.abs(np.abs(ys - cy) - h / 4) < h / 4 - 1.5 * s
        car = cars[row, col]
        has_car = lot & in_slot & in_row & (car >= 0) & (((xs - (cx - w / 2)) % slot) < slot - 0.4 * s)
        stripes = lot & ~in_slot & in_row
        colors = _CAR_COLORS[np.maximum(car, 0)]
        return [(lot, _ASPHALT, True), (stripes, PALETTE["white"], True), (has_car, colors, True)]

    return Sprite(w / 2 + 1, h / 2 + 1, paint)


def _swimming_pool(rng: np.random.Generator, s: float, rgb: RGB) -> Sprite:
    w, h = rng.uniform(8, 14) * s, rng.uniform(6, 9) * s

    def paint(xs, ys, cx, cy):
        return [(_rect(xs, ys, cx, cy, w + 2.5 * s, h + 2.5 * s), (226.0, 220.0, 206.0), True),
                (_rect(xs, ys, cx, cy, w, h), rgb, True)]

    return Sprite(w / 2 + 2 * s, h / 2 + 2 * s, paint)


KINDS: dict[str, _Kind] = {
    "building": _Kind(("red", "blue", "white", "grey", "brown"),
                      {"urban area": 4, "farmland": 2, "grassland": 1.5, "forest": 1.5, "bare land": 1,
                       "sea": 1}, False, (1, 6), _building),
    "tree": _Kind(None, {"farmland": 2, "grassland": 2, "urban area": 1, "bare land": 0.5}, False, (1, 9),
                  _tree),
    "plane": _Kind(("white", "grey"), {"bare land": 1.5, "urban area": 0.7}, False, (1, 4), _plane),
    "ship": _Kind(("white", "red", "grey", "yellow"), {"sea": 3}, True, (1, 5), _ship),
    "storage tank": _Kind(("white", "grey"),
                          {"bare land": 1.5, "urban area": 1, "sea": 1, "farmland": 1, "forest": 0.5},
                          False, (1, 6), _storage_tank),
    "tennis court": _Kind(("green", "blue", "red"), {"urban area": 1, "grassland": 1}, False, (1, 3),
                          _tennis_court),
    "basketball court": _Kind(("orange", "blue", "red"), {"urban area": 1, "grassland": 0.7}, False, (1, 2),
                              _basketball_court),
    "parking lot": _Kind(None, {"urban area": 1.5, "bare land": 1, "grassland": 0.7, "forest": 1}, False,
                         (1, 2), _parking_lot),
    "swimming pool": _Kind(("blue",), {"urban area": 1, "grassland": 1, "forest": 0.7}, False, (1, 3),
                           _swimming_pool),
}
BRIDGE_COLORS = ("grey", "white", "red")
#: Every object label a caption may mention.
LABELS = (*KINDS, "bridge", "road", "river")


# --------------------------------------------------------------------------------------------- the scene


class Canvas:
    """Paints one scene and keeps the masks that decide where the next object may go.

    ``s`` is the scale of the background geometry (pixels per design pixel of a 128-pixel image); sprites are
    drawn at whatever scale their caller passes.
    """

    def __init__(self, rng: np.random.Generator, size: int, background: str):
        self.rng, self.size, self.s, self.background = rng, size, size / 128, background
        self.rgb = _TEXTURES[background](rng, size).astype(np.float32)
        self.water = np.zeros((size, size), bool)
        self.taken = np.zeros((size, size), bool)
        self.objects: list[SceneObject] = []
        self.coast = False

    def fork(self, rng: np.random.Generator) -> Canvas:
        """A copy of the pixels and masks for another scene on this background, drawing from ``rng``.

        The copy has no objects: what was painted so far (land cover, roads, a river) is scenery shared by
        every fork, and only what a fork adds is annotated.
        """
        other = copy.copy(self)
        other.rng, other.objects = rng, []
        other.rgb, other.water, other.taken = self.rgb.copy(), self.water.copy(), self.taken.copy()
        return other

    def paint(self, layers: list[Layer], y0: int, x0: int) -> tuple[int, int, int, int] | None:
        """Paint layers into the window at (y0, x0); return the box of the object's own pixels."""
        own = None
        for mask, paint, is_object in layers:
            h, w = mask.shape
            view = self.rgb[y0:y0 + h, x0:x0 + w]
            if isinstance(paint, float):
                view[mask] *= paint
            elif isinstance(paint, np.ndarray):
                view[mask] = paint[mask]
            else:
                view[mask] = paint
            if is_object:
                own = mask if own is None else own | mask
        if own is None or not own.any():
            return None
        rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1

    def try_place(self, sprite: Sprite, region: tuple[float, float, float, float], on_water: bool,
                  tries: int = 30) -> tuple[int, int, int, int] | None:
        """Drop a sprite at a random free spot with its whole footprint in ``region`` on the right terrain."""
        rx0, ry0, rx1, ry1 = region
        if rx1 - rx0 < 2 * sprite.half_w or ry1 - ry0 < 2 * sprite.half_h:
            return None
        for _ in range(tries):
            cx = self.rng.uniform(rx0 + sprite.half_w, rx1 - sprite.half_w)
            cy = self.rng.uniform(ry0 + sprite.half_h, ry1 - sprite.half_h)
            x0, y0, x1, y1 = _footprint(sprite, cx, cy)
            terrain = self.water[y0:y1, x0:x1]
            if self.taken[y0:y1, x0:x1].any() or not (terrain.all() if on_water else not terrain.any()):
                continue
            box = self.place_at(sprite, cx, cy)
            if box is not None:
                return box
        return None

    def place_at(self, sprite: Sprite, cx: float, cy: float) -> tuple[int, int, int, int] | None:
        """Paint a sprite centred at (cx, cy), unchecked, and reserve its footprint plus a margin.

        Returns the box of the object's own pixels, or None when none of them fell on a pixel centre.
        """
        xs, ys = _grid(self.size)
        x0, y0, x1, y1 = _footprint(sprite, cx, cy)
        box = self.paint(sprite.paint(xs[y0:y1, x0:x1], ys[y0:y1, x0:x1], cx, cy), y0, x0)
        if box is not None:
            m = max(1, round(self.s))
            self.taken[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
        return box

    def add(self, label: str, color: str | None, box: tuple[int, int, int, int]) -> None:
        self.objects.append(SceneObject(label, color, box))

    def finish(self) -> Scene:
        """The scene: the painted pixels plus a little sensor noise, rounded to bytes, and its objects."""
        noise = 2.0 * self.rng.standard_normal((self.size, self.size, 1), dtype=np.float32)
        image = np.clip(np.rint(self.rgb + noise), 0, 255).astype(np.uint8)
        return Scene(self.background, image, self.objects, self.coast)


def _footprint(sprite: Sprite, cx: float, cy: float) -> tuple[int, int, int, int]:
    """The pixel window ``x0, y0, x1, y1`` a sprite centred at (cx, cy) may paint."""
    return (int(cx - sprite.half_w), int(cy - sprite.half_h),
            math.ceil(cx + sprite.half_w), math.ceil(cy + sprite.half_h))


def _add_coast(b: Canvas) -> None:
    """Turn one side of a sea scene into a sandy shore, with foam on the waterline."""
    size, s, rng = b.size, b.s, b.rng
    xs, ys = _grid(size)
    depth = rng.uniform(28, 46) * s + 5 * s * np.sin(rng.uniform(0, 2 * math.pi) + xs[0] * 0.08 / s)
    side = rng.integers(4)
    along = [ys, size - ys, xs, size - xs][side]
    across = xs if side < 2 else ys
    shore = depth[np.minimum(across.astype(int), size - 1)]
    land = along < shore
    sand = _mix((196, 180, 136), (216, 202, 160), _value_noise(rng, size, 10))
    b.rgb[land] = sand[land]
    b.rgb[(along >= shore) & (along < shore + 1.5 * s)] = (214, 222, 222)
    b.water = ~land


def _add_river(b: Canvas) -> tuple[bool, np.ndarray, float]:
    """A meandering river across the scene; returns its direction, centre line and width."""
    size, s, rng = b.size, b.s, b.rng
    xs, ys = _grid(size)
    horizontal = rng.random() < 0.5
    along, across = (xs, ys) if horizontal else (ys, xs)
    t = np.arange(size) + 0.5
    amplitude, period = rng.uniform(3, 9) * s, rng.uniform(90, 180) * s
    centre = rng.uniform(0.3, 0.7) * size + amplitude * np.sin(2 * math.pi * t / period + rng.uniform(0, 6.3))
    width = rng.uniform(12, 18) * s
    offset = across - centre[along.astype(int)]
    bank = np.abs(offset) < width / 2 + 1.5 * s
    river = np.abs(offset) < width / 2
    b.rgb[bank] = (104, 108, 72)
    b.rgb[river] = _mix(_WATER, (70, 118, 150), _value_noise(rng, size, 8))[river]
    b.water = river
    b.taken |= bank
    b.add("river", None, _mask_box(river))
    return horizontal, centre, width


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _add_bridges(b: Canvas, horizontal: bool, centre: np.ndarray, width: float) -> None:
    """One or two bridges of one colour, square across the river and reaching past both banks."""
    s, rng = b.s, b.rng
    color = BRIDGE_COLORS[rng.integers(len(BRIDGE_COLORS))]
    rgb = jitter(rng, PALETTE[color])
    xs, ys = _grid(b.size)
    used = np.zeros_like(b.taken)
    for _ in range(rng.integers(1, 3)):
        deck_w, reach = rng.uniform(4, 6) * s, width / 2 + rng.uniform(4, 6) * s
        for _try in range(20):
            pos = rng.uniform(0.12, 0.88) * b.size
            mid = float(centre[int(pos)])
            cx, cy = (pos, mid) if horizontal else (mid, pos)
            across, along = deck_w / 2 + 2 * s, reach + 2 * s
            hw, hh = (across, along) if horizontal else (along, across)
            x0, y0, x1, y1 = int(cx - hw), int(cy - hh), math.ceil(cx + hw), math.ceil(cy + hh)
            if x0 < 0 or y0 < 0 or x1 > b.size or y1 > b.size or used[y0:y1, x0:x1].any():
                continue
            angle = math.pi / 2 if horizontal else 0.0
            win = (xs[y0:y1, x0:x1], ys[y0:y1, x0:x1])
            layers = [(_rect(*win, cx + 2 * s, cy + 2 * s, 2 * reach, deck_w, angle), _SHADOW, False),
                      (_rect(*win, cx, cy, 2 * reach, deck_w, angle), _scale(rgb, 0.75), True),
                      (_rect(*win, cx, cy, 2 * reach, deck_w - 2 * s, angle), rgb, True)]
            box = b.paint(layers, y0, x0)
            if box is not None:
                b.taken[y0:y1, x0:x1] = used[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True
                b.add("bridge", color, box)
                break


def _add_roads(b: Canvas, count: int) -> list[tuple[float, float, float, float]]:
    """Straight roads (one, or two crossing); returns the strips beside them where objects may line up."""
    size, s, rng = b.size, b.s, b.rng
    xs, ys = _grid(size)
    first_horizontal = rng.random() < 0.5
    strips = []
    for k in range(count):
        horizontal = first_horizontal != (k == 1)
        along, across = (xs, ys) if horizontal else (ys, xs)
        width, centre = rng.uniform(8, 11) * s, rng.uniform(0.25, 0.75) * size
        dist = np.abs(across - centre)
        band = dist < width / 2
        edge = band & (dist > width / 2 - s)
        dashes = (dist < 0.5 * s) & ((along // (6 * s)) % 2 == 0)
        b.rgb[band] = _ASPHALT
        b.rgb[edge] = (150, 150, 150)
        b.rgb[dashes] = PALETTE["white"] if rng.random() < 0.6 else PALETTE["yellow"]
        b.taken |= dist < width / 2 + s
        b.add("road", None, _mask_box(band))
        lo, hi = centre - width / 2 - 1.5 * s, centre + width / 2 + 1.5 * s
        depth = 28 * s
        for a0, a1 in ((lo - depth, lo), (hi, hi + depth)):
            strips.append((0.0, max(a0, 0.0), float(size), min(a1, size)) if horizontal
                          else (max(a0, 0.0), 0.0, min(a1, size), float(size)))
    return strips


def _plan_groups(rng: np.random.Generator, background: str, land: bool) -> list[tuple[str, str | None, int]]:
    """Choose 1-3 (label, colour, count) groups allowed on the background; a label may repeat in colours."""
    allowed = [label for label, kind in KINDS.items()
               if background in kind.backgrounds and (land or kind.on_water)]
    weights = np.array([KINDS[label].backgrounds[background] for label in allowed])
    n_groups = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    groups: list[tuple[str, str | None, int]] = []
    for _ in range(4 * n_groups):
        if len(groups) == n_groups:
            break
        label = allowed[rng.choice(len(allowed), p=weights / weights.sum())]
        kind = KINDS[label]
        color = None if kind.colors is None else kind.colors[rng.integers(len(kind.colors))]
        if any(g[0] == label and g[1] == color for g in groups):
            continue
        groups.append((label, color, int(rng.integers(kind.counts[0], kind.counts[1] + 1))))
    return groups


def _cell_region(size: int, cell: int) -> tuple[float, float, float, float]:
    """One of the 3x3 cells, grown by half a cell on every side, so groups cluster but may spread."""
    third = size / 3
    col, row = cell % 3, cell // 3
    return (max(0.0, (col - 0.5) * third), max(0.0, (row - 0.5) * third),
            min(float(size), (col + 1.5) * third), min(float(size), (row + 1.5) * third))


def _place_groups(b: Canvas, strips: list[tuple[float, float, float, float]]) -> None:
    """Place each planned group in its own grown 3x3 cell, or in a strip beside a road.

    Members that find no room are dropped, so counts in captions come from what was placed. The first group
    may fall back to the whole image, so that every scene shows at least one object.
    """
    rng = b.rng
    cells = list(rng.permutation(9))
    for i, (label, color, count) in enumerate(_plan_groups(rng, b.background, not b.water.all())):
        kind = KINDS[label]
        beside_road = bool(strips) and not kind.on_water and rng.random() < 0.5
        region = strips[rng.integers(len(strips))] if beside_road else _cell_region(b.size, int(cells[i]))
        whole = (0.0, 0.0, float(b.size), float(b.size))
        placed = 0
        for _ in range(count):
            rgb = jitter(rng, PALETTE[color]) if color else (0.0, 0.0, 0.0)  # colourless kinds ignore it
            box = b.try_place(kind.sprite(rng, b.s, rgb), region, kind.on_water)
            if box is None and placed == 0 and i == 0:
                box = b.try_place(kind.sprite(rng, b.s, rgb), whole, kind.on_water, tries=200)
            if box is not None:
                b.add(label, color, box)
                placed += 1


# odds of (none, road, two crossing roads, river) per land background
_FEATURE_ODDS: dict[str, list[float]] = {
    "forest": [0.2, 0.35, 0.0, 0.45],
    "farmland": [0.3, 0.4, 0.1, 0.2],
    "bare land": [0.5, 0.4, 0.1, 0.0],
    "urban area": [0.25, 0.4, 0.35, 0.0],
    "grassland": [0.35, 0.3, 0.05, 0.3],
}


def render_background(rng: np.random.Generator, size: int = 128, *, bridges: bool = True
                      ) -> tuple[Canvas, list[tuple[float, float, float, float]]]:
    """Draw a scene's land cover and linear features (coast, river and its bridges, roads) from ``rng``.

    Returns the canvas and the strips beside the roads where objects may line up. ``bridges=False`` leaves
    rivers unbridged (a bridge is a large coloured object, which a scene of small objects must not have).
    """
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    b = Canvas(rng, size, background)
    strips: list[tuple[float, float, float, float]] = []
    if background == "sea":
        b.water[:] = True
        b.coast = bool(rng.random() < 0.6)
        if b.coast:
            _add_coast(b)
    else:
        feature = rng.choice(["none", "road", "crossroads", "river"], p=_FEATURE_ODDS[background])
        if feature == "river":
            horizontal, centre, width = _add_river(b)
            if bridges and rng.random() < 0.6:
                _add_bridges(b, horizontal, centre, width)
        elif feature != "none":
            strips = _add_roads(b, 2 if feature == "crossroads" else 1)
    return b, strips


def render_scene(rng: np.random.Generator, size: int = 128) -> Scene:
    """Draw one scene from ``rng``: background, linear features (coast, river, roads), then object groups."""
    b, strips = render_background(rng, size)
    _place_groups(b, strips)
    return b.finish()
