"""Keyword normalisation and the remote-sensing noun lexicon: core, because every keyword provider, the guidance
service and the test models of the perspective generators speak the same keywords.

Keywords from every provider go through :func:`normalize_keyword`, so "Tennis Courts", "tennis court" and
"tennis  courts." are one keyword everywhere: in caches, in perspectives and in file names (the reference
code wrote ``tennis_courts`` and looked up ``tennis courts``, so multi-word nouns were never found).

The lexicon is closed on purpose. A part-of-speech tagger needs a model download and still returns
"area", "side" or "color" as nouns; a list of the objects that remote-sensing captions name is precise,
deterministic and offline. Users extend it with the ``extra_nouns`` option of the ``rules`` provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Objects a perspective can show. Multi-word names are matched before their parts.
OBJECT_NOUNS: tuple[str, ...] = (
    # sports grounds
    "tennis court", "basketball court", "volleyball court", "badminton court", "baseball field",
    "baseball diamond", "soccer field", "football field", "ground track field", "running track",
    "golf course", "stadium", "playground", "track",
    # transport
    "parking lot", "parking garage", "car", "truck", "bus", "vehicle", "train", "railway", "railroad",
    "railway station", "train station", "road", "highway", "freeway", "street", "avenue", "lane",
    "intersection", "roundabout", "overpass", "viaduct", "bridge", "tunnel", "runway", "taxiway", "airport",
    "plane", "airplane", "aircraft", "helicopter", "helipad", "ship", "boat", "yacht", "ferry",
    "harbor", "harbour", "port", "dock", "pier", "wharf",
    # buildings and infrastructure
    "building", "house", "residence", "tower", "skyscraper", "church", "temple", "school", "factory",
    "warehouse", "greenhouse", "storage tank", "oil tank", "water tower", "chimney", "dam",
    "power plant", "power station", "solar panel", "wind turbine", "transmission tower", "substation",
    "swimming pool", "pool", "fountain", "square", "plaza", "roof",
    # water and vegetation objects
    "river", "lake", "pond", "reservoir", "canal", "stream", "tree", "bush", "shrub", "lawn",
    "island", "sandbar",
)

#: Land cover and scene words: true nouns, but they name the whole image rather than a region of it.
SCENE_NOUNS: tuple[str, ...] = (
    "forest", "woods", "farmland", "field", "grassland", "meadow", "desert", "bare land", "sea", "ocean",
    "coast", "coastline", "beach", "shore", "mountain", "hill", "wetland", "city", "town", "village",
    "urban area", "residential area", "industrial area", "commercial area", "park", "water",
)

#: Nouns that name no object: positions, parts, appearance. Dropped from every provider's output.
STOP_NOUNS: frozenset[str] = frozenset({
    "area", "side", "part", "piece", "color", "colour", "appearance", "door", "image", "picture", "photo",
    "view", "scene", "corner", "center", "centre", "middle", "top", "bottom", "left", "right", "edge",
    "place", "kind", "type", "number", "shape", "row", "line", "group", "lot", "lots", "front", "back",
    "distance", "surface", "direction", "way", "thing", "object", "region", "space", "size", "pattern",
    "texture", "shadow", "background", "foreground", "aerial", "satellite", "land",
})

_IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "geese": "goose",
    "leaves": "leaf", "shelves": "shelf", "wharves": "wharf", "feet": "foot", "mice": "mouse",
}
_SAME_PLURAL = frozenset({"series", "species", "aircraft", "sheep", "fish", "deer", "woods"})
_ENDS_IN_S = frozenset({"bus", "gas", "campus", "canvas", "grass", "glass", "overpass", "access", "mass",
                        "status", "terminus"})
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def singular(word: str) -> str:
    """The singular of one lowercase English noun, by rule (the lexicon's own plurals are exact)."""
    if word in _SAME_PLURAL or word in _ENDS_IN_S or len(word) < 3:
        return word
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("ses") and word[:-2] in _ENDS_IN_S:
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def plural(word: str) -> str:
    """The plural of one lowercase English noun; used to recognise lexicon plurals exactly."""
    irregular = {v: k for k, v in _IRREGULAR_PLURALS.items()}
    if word in irregular:
        return irregular[word]
    if word in _SAME_PLURAL:
        return word
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith("f") and word in ("shelf", "wharf", "leaf"):
        return word[:-1] + "ves"
    return word + "s"


def words(text: str) -> list[str]:
    """Lowercase word tokens of a caption; hyphenated words stay whole."""
    return _WORD.findall(text.lower())


def normalize_keyword(text: str) -> str:
    """Lowercase, single-spaced, singular keyword; "" when nothing is left or it is a stop noun."""
    tokens = words(text.replace("_", " "))
    if not tokens:
        return ""
    tokens[-1] = singular(tokens[-1])
    keyword = " ".join(tokens)
    return "" if keyword in STOP_NOUNS else keyword


class Lexicon:
    """Finds lexicon nouns in text: longest match first, plurals folded onto their singular."""

    def __init__(self, nouns: Iterable[str]):
        self.nouns: tuple[str, ...] = tuple(dict.fromkeys(n for n in map(normalize_keyword, nouns) if n))
        self._forms: dict[tuple[str, ...], str] = {}
        for noun in self.nouns:
            parts = noun.split(" ")
            self._forms[tuple(parts)] = noun
            self._forms[(*parts[:-1], plural(parts[-1]))] = noun
        self._longest = max((len(k) for k in self._forms), default=1)

    def find(self, text: str) -> list[str]:
        """Every lexicon noun in ``text``, in order of appearance, repeats included."""
        tokens = words(text)
        found: list[str] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                noun = self._forms.get(tuple(tokens[i:i + n]))
                if noun is not None:
                    found.append(noun)
                    i += n
                    break
            else:
                i += 1
        return found


def rank_keywords(per_caption: Iterable[Iterable[str]]) -> list[str]:
    """Merge the keyword lists of one image's captions: most captions first, then first appearance.

    Counting captions (not mentions) means a noun that several annotators named outranks one that a single
    caption repeats, and the order never depends on anything but the captions themselves.
    """
    support: dict[str, int] = {}
    for keywords in per_caption:
        for keyword in dict.fromkeys(keywords):
            support[keyword] = support.get(keyword, 0) + 1
    order = {k: i for i, k in enumerate(support)}
    return sorted(support, key=lambda k: (-support[k], order[k]))
