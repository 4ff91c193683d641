"""Captions for ``synthetic-rs`` scenes, written from the scene's ground truth.

Many scenes share a background, so captions are built to carry object-level detail: which objects, how many,
which colour, where in the image and next to what. Every statement is derived from the painted boxes (counts,
positions and relations are measured, never planned), so a caption is true of its own image. Nouns are the
multi-word labels of :data:`rsitr_bench.datasets.synthetic_scenes.LABELS` ("tennis court", "storage tank"),
which is what keyword extraction downstream is meant to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from rsitr_bench.datasets.synthetic_scenes import Scene, SceneObject

Box = tuple[int, int, int, int]
T = TypeVar("T")

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
            "twenty")
_LINEAR = ("road", "river")

# (preposition, noun phrase) per background; "sea" is split into open water and coast scenes.
_SETTINGS: dict[str, list[tuple[str, str]]] = {
    "forest": [("in", "a forest"), ("in", "a dense forest"), ("in", "a wooded area"), ("in", "the woods")],
    "farmland": [("in", "farmland"), ("in", "the farm fields"), ("among", "cultivated fields"),
                 ("in", "an agricultural area")],
    "bare land": [("on", "bare land"), ("in", "a desert"), ("on", "barren land"), ("in", "a sandy area")],
    "sea": [("on", "the sea"), ("on", "the open sea"), ("on", "the ocean"), ("on", "calm water")],
    "coast": [("on", "a coastline"), ("on", "the coast"), ("by", "a sandy shore"), ("at", "the seaside")],
    "urban area": [("in", "an urban area"), ("in", "a city"), ("in", "a paved area"), ("in", "a town")],
    "grassland": [("on", "grassland"), ("in", "a meadow"), ("in", "a grassy area"),
                  ("on", "green grassland")],
}

# 3x3 cells of the image (column, row) -> phrases completed by " of the image"
_POSITIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the upper left corner", "at the top left"),
    (1, 0): ("at the top", "in the upper part"),
    (2, 0): ("in the upper right corner", "at the top right"),
    (0, 1): ("on the left side", "on the left"),
    (1, 1): ("in the center", "in the middle"),
    (2, 1): ("on the right side", "on the right"),
    (0, 2): ("in the lower left corner", "at the bottom left"),
    (1, 2): ("at the bottom", "in the lower part"),
    (2, 2): ("in the lower right corner", "at the bottom right"),
}


@dataclass(frozen=True)
class _Mention:
    """Something a caption can name: objects of one label and, optionally, one colour."""

    label: str
    color: str | None
    boxes: tuple[Box, ...]

    @property
    def count(self) -> int:
        return len(self.boxes)

    @property
    def centre(self) -> tuple[float, float]:
        n = len(self.boxes)
        return sum(b[0] + b[2] for b in self.boxes) / (2 * n), sum(b[1] + b[3] for b in self.boxes) / (2 * n)


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _be(m: _Mention) -> str:
    return "is" if m.count == 1 else "are"


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _direction(box: Box) -> str:
    """Which way a road or river (a box spanning the image) runs."""
    return "from left to right" if box[2] - box[0] > box[3] - box[1] else "from top to bottom"


def _gap(a: Box, b: Box) -> int:
    """Chessboard distance between two boxes (0 when they touch or overlap)."""
    return max(0, a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


class _Writer:
    """Turns one scene into candidate captions, grouped by the kind of fact they state."""

    def __init__(self, scene: Scene, rng: np.random.Generator, exact_counts: bool = False):
        self.rng, self.size, self.exact_counts = rng, scene.image.shape[0], exact_counts
        self.coast = scene.coast
        self.setting = _SETTINGS["coast" if scene.coast else scene.background]
        self.groups = _group(scene.objects)
        self.objects = [g for g in self.groups if g.label not in _LINEAR]
        self.road_boxes = [tuple(o.box) for o in scene.objects if o.label == "road"]

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.integers(len(options))]

    def noun_phrase(self, m: _Mention) -> str:
        """``three red buildings``, ``a white plane``, ``several trees``: exact counts, sometimes vague.

        With ``exact_counts`` a count is always a number (no generator draw is spent deciding).
        """
        exact = self.exact_counts or self.rng.random() < 0.7
        head = " ".join(([m.color] if m.color else []) + [m.label if m.count == 1 else m.label + "s"])
        if m.count == 1:
            return f"{self.pick([_article(head), 'one']) if exact else _article(head)} {head}"
        if exact or m.count == 2:
            return f"{_number(m.count)} {head}"
        return f"{self.pick(['several', 'many'] if m.count >= 5 else ['some', 'a few', 'several'])} {head}"

    def place(self) -> str:
        prep, noun = self.pick(self.setting)
        return f"{prep} {noun}"

    def position(self, m: _Mention) -> str:
        third = self.size / 3
        cx, cy = m.centre
        return self.pick(_POSITIONS[(min(int(cx // third), 2), min(int(cy // third), 2))]) + " of the image"

    def relation(self, a: _Mention, b: _Mention) -> str | None:
        """Where ``a`` lies relative to ``b``, or None when they are neither apart nor close."""
        (ax, ay), (bx, by) = a.centre, b.centre
        dx, dy, far = ax - bx, ay - by, self.size / 8
        options = []
        if abs(dx) >= abs(dy) and abs(dx) > far:
            options.append("to the left of" if dx < 0 else "to the right of")
        elif abs(dy) > far:
            options.append("above" if dy < 0 else "below")
        close = min(_gap(p, q) for p in a.boxes for q in b.boxes) <= self.size / 12
        if close and math.hypot(dx, dy) <= self.size / 3:
            options += ["next to", "near"]
        return self.pick(options) if options else None

    def listing(self) -> str:
        """Up to three labels with their counts; a label in two colours is named per colour or as one."""
        labels = list(dict.fromkeys(g.label for g in self.groups))
        chosen = [labels[i] for i in sorted(self.rng.permutation(len(labels))[: self.rng.integers(1, 4)])]
        parts = []
        for label in chosen:
            groups = [g for g in self.groups if g.label == label]
            if len(groups) > 1 and self.rng.random() < 0.4:
                groups = [_Mention(label, None, tuple(b for g in groups for b in g.boxes))]
            parts += [self.noun_phrase(g) for g in groups]
        return _join(parts)

    # ----------------------------------------------------------------------------------- caption families

    def inventory(self) -> list[str]:
        out = []
        for _ in range(6):
            items, (prep, noun) = self.listing(), self.pick(self.setting)
            be = "is" if items.startswith(("a ", "an ", "one ")) else "are"
            out += [f"There {be} {items} {prep} {noun}.",
                    f"An aerial view of {noun} with {items}.",
                    f"{_cap(noun)} with {items}.",
                    f"This image shows {items} {prep} {noun}."]
        return out

    def positions(self) -> list[str]:
        out = []
        for m in self.objects:
            np_, pos = self.noun_phrase(m), self.position(m)
            out += [f"{_cap(np_)} {_be(m)} {pos}.", f"{_cap(pos)} there {_be(m)} {np_}.",
                    f"{_cap(np_)} can be seen {pos}."]
        return out

    def relations(self) -> list[str]:
        out = []
        for a in self.objects:
            for b in self.objects:
                rel = None if a is b else self.relation(a, b)
                if rel:
                    first, second = self.noun_phrase(a), self.noun_phrase(b)
                    out += [f"{_cap(first)} {_be(a)} {rel} {second}.",
                            f"There {_be(a)} {first} {rel} {second} {self.place()}."]
        return out

    def linear(self) -> list[str]:
        """Roads, rivers and what lines or spans them."""
        out = []
        for g in self.groups:
            if g.label == "road" and g.count == 2:
                a, b = g.boxes
                crossing = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
                where = self.position(_Mention("road", None, (crossing,)))
                out += [f"Two roads cross {self.place()}.", f"Two roads intersect {where}."]
            elif g.label in ("road", "river"):
                way, where = _direction(g.boxes[0]), self.position(g)
                verb = "runs" if g.label == "road" else "flows"
                out += [f"A {g.label} {verb} {way} {where}.",
                        f"A {g.label} crosses {self.pick(self.setting)[1]} {way}."]
            elif g.label == "bridge":
                np_ = self.noun_phrase(g)
                out += [f"{_cap(np_)} {'crosses' if g.count == 1 else 'cross'} the river.",
                        f"The river is spanned by {np_}.", f"{_cap(np_)} over the river {self.position(g)}."]
        for m in self.objects:
            if self.road_boxes and all(min(_gap(b, r) for r in self.road_boxes) <= self.size / 8
                                       for b in m.boxes):
                np_ = self.noun_phrase(m)
                out += [f"{_cap(np_)} {_be(m)} along the road.", f"There {_be(m)} {np_} beside the road."]
        return out

    def colors(self) -> list[str]:
        out = []
        for label in dict.fromkeys(g.label for g in self.objects if g.color):
            groups = [g for g in self.objects if g.label == label]
            total = sum(g.count for g in groups)
            noun = label if total == 1 else label + "s"
            if total == 1:
                out.append(f"The {label} {self.place()} is {groups[0].color}.")
            elif len(groups) == 1:
                out += [f"{'Both' if total == 2 else 'All ' + _number(total)} {noun} are {groups[0].color}.",
                        f"The {noun} {self.place()} are {groups[0].color}."]
            else:
                out.append(f"The {_number(total)} {noun} are {_join([g.color for g in groups])}.")
                out += [f"{_cap(_number(g.count))} of the {noun} {_be(g)} {g.color}." for g in groups]
        return out

    def water(self) -> list[str]:
        out = []
        for m in self.objects:
            if m.label == "ship":
                out += [f"{_cap(self.noun_phrase(m))} {_be(m)} sailing on the water.",
                        f"There {_be(m)} {self.noun_phrase(m)} on the sea."]
            elif self.coast:
                out.append(f"{_cap(self.noun_phrase(m))} {_be(m)} on the shore.")
        return out

    def scene(self) -> list[str]:
        """Background-only captions; rare, since thousands of images share each one."""
        return [f"An aerial view of {noun}." for _, noun in self.setting] if self.rng.random() < 0.2 else []


def _group(objects: list[SceneObject]) -> list[_Mention]:
    """One mention per (label, colour), in order of first appearance."""
    boxes: dict[tuple[str, str | None], list[Box]] = {}
    for obj in objects:
        boxes.setdefault((obj.label, obj.color), []).append(tuple(obj.box))
    return [_Mention(label, color, tuple(bs)) for (label, color), bs in boxes.items()]


# at most this many captions of a family; families not listed are uncapped
_CAPS = {"scene": 1}


def write_captions(scene: Scene, rng: np.random.Generator, n: int = 5, *, exact_counts: bool = False,
                   background_captions: bool = True) -> list[str]:
    """``n`` distinct captions, taken in turn from randomly ordered families so that their facts vary.

    ``exact_counts`` never replaces a count by "some" or "several"; ``background_captions=False`` never
    writes a caption that names the background alone. Both serve corpora whose captions must state the
    objects' counts (``synthetic-rs-fine``); the defaults are ``synthetic-rs``'s.
    """
    writer = _Writer(scene, rng, exact_counts)
    families: dict[str, Callable[[], list[str]]] = {
        "inventory": writer.inventory, "positions": writer.positions, "relations": writer.relations,
        "linear": writer.linear, "colors": writer.colors, "water": writer.water, "scene": writer.scene,
    }
    pools = {name: list(dict.fromkeys(make())) for name, make in families.items()}
    caps = _CAPS if background_captions else {**_CAPS, "scene": 0}
    chosen: list[str] = []
    taken = dict.fromkeys(pools, 0)
    while len(chosen) < n:
        progress = False
        for name in [list(pools)[i] for i in rng.permutation(len(pools))]:
            pool = [c for c in pools[name] if c not in chosen]
            if pool and taken[name] < caps.get(name, n) and len(chosen) < n:
                chosen.append(pool[rng.integers(len(pool))])
                taken[name] += 1
                progress = True
        if not progress:
            raise RuntimeError(f"only {len(chosen)} distinct captions could be written for a scene")
    return chosen
