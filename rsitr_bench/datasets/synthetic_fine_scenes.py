"""Scenes of ``synthetic-rs-fine``: families that share one background and differ only in small objects.

The regime is fixed from MPS-CLIP's premise: a sub-image cut out around a keyword's object (docs/mps-clip.md
§1) shows details that the whole image, resized to the encoder's input, cannot; so captions here name only
such details. Every number below follows from the embedded backbone's 64-pixel input (``rsitr-tiny``, 8-pixel
patches), never from a measured result (docs/datasets.md, "synthetic-rs-fine"):

- An image is :data:`IMAGE_SIZE` = 256 pixels, so the global view is a 4x downsample.
- Every annotated object is drawn so that its box spans at most :data:`MAX_OBJECT_PX` = 8 image pixels, i.e.
  at most 2 pixels of the backbone input (a quarter of a patch's side). Objects are the ``synthetic-rs`` sprites
  (which the backbone was pretrained on) drawn at a per-kind scale, :data:`SCALES`.
- Objects of one kind form a group: a block of 3x3 slots of :data:`SLOT_PX` = 16 pixels (48 pixels, 12 pixels
  of the backbone input, about one and a half patches), each object in its own slot, 1 to 5 of them. Cut out
  and resized to the backbone input, a group's box (at most 48 pixels) is magnified at least 4/3 times and a
  single object's box at least 8 times, so its objects span 3 input pixels or more, up to the whole input
  (``synthetic-rs`` buildings span 5 to 11): a crop resolves what the global view cannot.
- :data:`FAMILY_SIZE` = 8 scenes share one background (land cover, roads or a river, identical pixels) and
  the same groups (kinds and places); they differ only in each group's colour and count, and no two members
  of a family give a group the same (colour, count). The coarse content thus names a family, never a scene:
  alone it leaves a text query 8 equally likely images.

Roads, rivers and coasts are scenery: painted, never annotated, so every annotated (caption-named) object is
small. Boxes are tight on the object's own pixels, as in ``synthetic-rs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsitr_bench.datasets.synthetic_scenes import KINDS, PALETTE, Canvas, Scene, jitter, render_background

IMAGE_SIZE = 256
#: The side of the embedded backbone's input, which the global view is resized to.
BACKBONE_INPUT = 64
#: The most image pixels an annotated object's box spans, on either side (2 pixels of the backbone input).
MAX_OBJECT_PX = 8
#: Each object of a group is drawn inside its own square slot; its footprint (shadow, wake) fits the slot.
SLOT_PX = 16
#: A group is a block of GROUP_SLOTS x GROUP_SLOTS slots.
GROUP_SLOTS = 3
GROUP_PX = GROUP_SLOTS * SLOT_PX
#: Scenes per family: they share the background and the groups' kinds and places.
FAMILY_SIZE = 8
#: A group holds this many objects, at least and at most.
COUNTS = (1, 5)
#: Room kept free around a group, so that two groups never touch.
GROUP_MARGIN = SLOT_PX // 2

#: Sprite scale (image pixels per ``synthetic-rs`` design pixel) per kind. Each is the largest that keeps the
#: largest instance of the kind under 7.5 pixels across (a box of at most MAX_OBJECT_PX pixel centres) with its
#: footprint inside a slot; from the sprites' size ranges in ``synthetic_scenes`` (design pixels):
SCALES: dict[str, float] = {
    "building": 0.34,          # roof at most 22 across -> 7.5; footprint half 13 s = 4.4
    "plane": 0.22,             # wing tips at 0.57 L, L at most 30 -> 34.1 across -> 7.5; half 17 s + 1 = 4.7
    "ship": 0.26,              # hull at most 28 long -> 7.3; half 30 s = 7.8 with its wake
    "storage tank": 0.44,      # at most 17 across -> 7.5; half 10 s = 4.4
    "tennis court": 0.28,      # at most 26 long -> 7.3; half 13 s + 1 = 4.6
    "basketball court": 0.25,  # at most 29 long -> 7.3; half 14.5 s + 1 = 4.6
}
#: How many groups a family has (1, 2 or 3), as ``synthetic-rs`` plans its groups.
_GROUP_ODDS = (0.25, 0.45, 0.3)


@dataclass(frozen=True)
class Group:
    """Objects of one kind in one block of slots; ``looks[m]`` is member m's (colour, count)."""

    label: str
    x0: int
    y0: int
    looks: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Family:
    """The background every member shares and the groups whose looks tell the members apart."""

    canvas: Canvas
    groups: tuple[Group, ...]


def looks_of(label: str) -> list[tuple[str, int]]:
    """Every (colour, count) a group of ``label`` may take."""
    colors = KINDS[label].colors or ()
    return [(color, n) for color in colors for n in range(COUNTS[0], COUNTS[1] + 1)]


def plan_family(rng: np.random.Generator) -> Family:
    """Draw a family from ``rng``: its background, its groups' kinds and places, each member's looks."""
    canvas, _ = render_background(rng, IMAGE_SIZE, bridges=False)
    blocked = {False: canvas.water | canvas.taken, True: ~canvas.water | canvas.taken}  # by on_water
    candidates = [label for label in SCALES if canvas.background in KINDS[label].backgrounds]
    groups: list[Group] = []
    for _ in range(int(rng.choice([1, 2, 3], p=_GROUP_ODDS))):
        corners = {label: _free_corners(blocked[KINDS[label].on_water]) for label in candidates}
        fitting = [label for label in candidates if len(corners[label])]
        if not fitting:
            break
        weights = np.array([KINDS[label].backgrounds[canvas.background] for label in fitting])
        label = fitting[rng.choice(len(fitting), p=weights / weights.sum())]
        y0, x0 = (int(v) for v in corners[label][rng.integers(len(corners[label]))])
        looks = looks_of(label)
        chosen = rng.choice(len(looks), FAMILY_SIZE, replace=False)
        groups.append(Group(label, x0, y0, tuple(looks[i] for i in chosen)))
        candidates.remove(label)
        for mask in blocked.values():
            mask[max(0, y0 - GROUP_MARGIN):y0 + GROUP_PX + GROUP_MARGIN,
                 max(0, x0 - GROUP_MARGIN):x0 + GROUP_PX + GROUP_MARGIN] = True
    if not groups:
        raise RuntimeError(f"no room for a {GROUP_PX}-pixel group on a {canvas.background} background")
    return Family(canvas, tuple(groups))


def _free_corners(blocked: np.ndarray) -> np.ndarray:
    """Top-left corners ``(y, x)`` of every GROUP_PX square that holds no blocked pixel (summed-area table)."""
    table = np.pad(blocked.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    w = GROUP_PX
    sums = table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]
    return np.argwhere(sums == 0)


def render_member(family: Family, member: int, rng: np.random.Generator) -> Scene:
    """Member ``member`` of ``family``: its groups' objects, each in a slot drawn from ``rng``, on the background."""
    canvas = family.canvas.fork(rng)
    for group in family.groups:
        color, count = group.looks[member]
        for slot in sorted(rng.choice(GROUP_SLOTS * GROUP_SLOTS, count, replace=False)):
            sprite = KINDS[group.label].sprite(rng, SCALES[group.label], jitter(rng, PALETTE[color]))
            row, col = divmod(int(slot), GROUP_SLOTS)
            free_x, free_y = SLOT_PX / 2 - sprite.half_w, SLOT_PX / 2 - sprite.half_h
            cx = group.x0 + (col + 0.5) * SLOT_PX + rng.uniform(-free_x, free_x)
            cy = group.y0 + (row + 0.5) * SLOT_PX + rng.uniform(-free_y, free_y)
            box = canvas.place_at(sprite, cx, cy)
            if box is None:
                raise RuntimeError(f"a {group.label} at scale {SCALES[group.label]} covered no pixel centre")
            canvas.add(group.label, color, box)
    return canvas.finish()
