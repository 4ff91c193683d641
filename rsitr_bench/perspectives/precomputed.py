"""``precomputed``: the sub-images published with MPS-CLIP, read from disk instead of segmented.

The reference release holds, per image, the nouns an LLM extracted from the image's captions (the ``nouns``
field of its finetune json files ``<ds>_train1.json`` / ``<ds>_test1.json``) and one segmented sub-image per
noun, ``subimages/{train,test}/<image stem>/<noun>_blackbg.png``: the whole image, black outside the noun's
mask. This generator hands those files out as perspectives (box = the mask's bounding box, mask = its
non-black pixels), so a method in ``crop_mode: masked`` sees exactly the published sub-images.

**It is the published, leaky protocol.** The val/test sub-images were segmented from nouns of each image's
*own* ground-truth captions. Its spec declares this (``derived_from_own_captions``); the guidance service
then records every val/test gallery item it serves as leaked, so every result that uses it is stamped
``leakage_audit: fail (as published)`` and non-compliant, whatever method asked for it.

Lookup, as the reference does it: nouns de-duplicated in first-occurrence order (a training image gets the
nouns of all its captions); a noun without a file is skipped (counted). Multi-word nouns: the reference looks
up ``tennis courts_blackbg.png`` while its segmentation wrote ``tennis_courts_blackbg.png``, so it never found
them. ``multi_word: both`` (default) looks for the space spelling, then the underscore spelling, and counts
the underscore hits (``precomputed_underscore_spelling``); ``multi_word: reference`` looks for the space
spelling only, reproducing the reference's misses.

Files are found under the data root: the folder that holds ``subimages/``, by default the first folder at or
above the image's own folder that has one (``rsitr-bench data fetch`` lays packages out that way); the noun
files are the ``<ds>_<split>[N].json`` files under that folder that carry ``nouns``. An image whose sub-image
folder is missing gets no perspective and is counted (``precomputed_missing_folders``) and logged; a missing
``subimages`` root is an error naming the folders searched.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.data.annotations import basename, data_error, expect_object, get_image_ref, load_json
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.context import ItemContext, Perspective
from rsitr_bench.harness.store import digest

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1
SUBIMAGES = "subimages"
#: Folders above an image searched for ``subimages/`` (images/<file> and images/<split>/<file> layouts).
SEARCH_UP = 3
#: Annotation files that may carry ``nouns``; the label picks the sub-image folder (val uses test, as published).
NOUN_FILE = re.compile(r"[a-z]+_(?P<s>train|val|test)\d*\.json", re.IGNORECASE)
SUBFOLDER = {"train": "train", "val": "test", "test": "test"}


@dataclass
class PrecomputedOptions:
    """Options of ``precomputed``.

    Attributes:
        root: the folder holding ``subimages/`` and the noun json files; default: found upward from each image.
        multi_word: ``both`` (space, then underscore spelling) or ``reference`` (space spelling only).
    """

    root: str | None = None
    multi_word: Literal["both", "reference"] = "both"


@dataclass(frozen=True)
class _Nouns:
    """One image's nouns (de-duplicated, in order) and the sub-image folder that holds their files."""

    nouns: tuple[str, ...]
    folder: Path
    file: Path


class PrecomputedGenerator:
    """The reference's published sub-images, one perspective per noun with a file."""

    def __init__(self, options: PrecomputedOptions, env: GuidanceEnv):
        self.options, self.env = options, env
        self.identity = digest("precomputed", VERSION, dataclasses.asdict(options))
        self._roots: dict[Path, Path] = {}
        self._nouns: dict[Path, dict[str, _Nouns]] = {}
        self._warned = False

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        counters: Counter = self.env.counters
        root = self._root(item.image_path)
        entry = self._index(root).get(basename(item.image_name))
        if entry is None:
            counters["precomputed_images_without_nouns"] += 1
            return []
        folder = entry.folder / Path(item.image_name).stem
        if not folder.is_dir():
            counters["precomputed_missing_folders"] += 1
            if not self._warned:
                self._warned = True
                self.env.log.warning("precomputed: no sub-image folder %s for %s (nouns from %s); such images get "
                                     "no perspective and are counted in precomputed_missing_folders",
                                     folder, item.image_name, entry.file)
            return []
        with Image.open(item.image_path) as img:
            size = img.size
        found = []
        for noun in entry.nouns:
            path = self._file(folder, noun, counters)
            perspective = path and _perspective(noun, path, size, counters)
            if perspective:
                found.append(perspective)
        return found

    def _file(self, folder: Path, noun: str, counters: Counter) -> Path | None:
        path = folder / f"{noun}_blackbg.png"
        if path.is_file():
            return path
        if self.options.multi_word == "both" and " " in noun:
            underscored = folder / f"{noun.replace(' ', '_')}_blackbg.png"
            if underscored.is_file():
                counters["precomputed_underscore_spelling"] += 1
                return underscored
        counters["precomputed_nouns_without_file"] += 1
        return None

    def _root(self, image_path: Path) -> Path:
        if self.options.root is not None:
            root = Path(self.options.root).expanduser()
            if not (root / SUBIMAGES).is_dir():
                raise DataError(f"perspective generator 'precomputed': the folder {root / SUBIMAGES} does not exist. "
                                f"Point the option root at the folder that holds subimages/ (e.g. a folder made by "
                                f"`rsitr-bench data fetch rsitmd`).")
            return root
        start = Path(image_path).parent
        if start not in self._roots:
            searched = [start, *list(start.parents)[:SEARCH_UP]]
            root = next((d for d in searched if (d / SUBIMAGES).is_dir()), None)
            if root is None:
                raise DataError(
                    f"perspective generator 'precomputed': no {SUBIMAGES}/ folder for the image {image_path}; looked "
                    f"for {', '.join(str(d / SUBIMAGES) for d in searched)}. Fetch a package with sub-images "
                    f"(`rsitr-bench data fetch rsitmd --to DIR`) or set the generator option root.")
            self._roots[start] = root
        return self._roots[start]

    def _index(self, root: Path) -> dict[str, _Nouns]:
        """Image name -> nouns, from every noun-bearing annotation file under ``root`` (read once)."""
        if root not in self._nouns:
            index: dict[str, _Nouns] = {}
            files = _noun_files(root)
            for file, label in files:
                for name, nouns in _read_nouns(file).items():
                    if name in index:
                        raise data_error(file, repr(name), f"image {name!r} also has nouns in {index[name].file}",
                                         "Keep one noun file per image (remove the stale copy)")
                    index[name] = _Nouns(nouns, root / SUBIMAGES / SUBFOLDER[label], file)
            if not index:
                raise DataError(f"perspective generator 'precomputed': no annotation file with a 'nouns' field under "
                                f"{root} (looked for <dataset>_<split>1.json files such as rsitmd_test1.json, found "
                                f"{', '.join(str(f) for f, _ in files) or 'none'}). Fetch the MPS-CLIP package "
                                f"(`rsitr-bench data fetch rsitmd`), which includes them.")
            self._nouns[root] = index
        return self._nouns[root]


def _noun_files(root: Path) -> list[tuple[Path, str]]:
    """Candidate annotation files at most two folders below ``root`` (never inside ``subimages/``)."""
    found = []
    for pattern in ("*.json", "*/*.json", "*/*/*.json"):
        for path in sorted(root.glob(pattern)):
            match = NOUN_FILE.fullmatch(path.name)
            if match and SUBIMAGES not in path.relative_to(root).parts:
                found.append((path, match["s"].lower()))
    return found


def _read_nouns(file: Path) -> dict[str, tuple[str, ...]]:
    """Per image, its nouns de-duplicated in first-occurrence order; {} for a file without ``nouns``."""
    data = load_json(file)
    if not isinstance(data, list) or not any(isinstance(r, dict) and "nouns" in r for r in data):
        return {}
    per_image: dict[str, list[str]] = {}
    for i, record in enumerate(data):
        record = expect_object(record, file, f"record {i}")
        ref = get_image_ref(record, "filename" if "filename" in record and "image" not in record else "image",
                            file, f"record {i}")
        nouns = record.get("nouns", [])
        if not isinstance(nouns, list) or not all(isinstance(n, str) for n in nouns):
            raise data_error(file, f"record {i} {ref!r}", "'nouns' is not a list of text")
        per_image.setdefault(basename(ref), []).extend(n.strip() for n in nouns if n.strip())
    return {name: tuple(dict.fromkeys(nouns)) for name, nouns in per_image.items()}


def _perspective(noun: str, path: Path, size: tuple[int, int], counters: Counter) -> Perspective | None:
    """The sub-image as a mask of its non-black pixels; None (counted) when unusable."""
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
    except OSError:
        counters["precomputed_unreadable_files"] += 1
        return None
    if (pixels.shape[1], pixels.shape[0]) != size:
        counters["precomputed_size_mismatch"] += 1
        return None
    mask = pixels.any(axis=2)
    if not mask.any():
        counters["precomputed_empty_masks"] += 1
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return Perspective(noun, box, 1.0, mask)


SPEC = PerspectiveGeneratorSpec(
    name="precomputed",
    factory=PrecomputedGenerator,
    options=PrecomputedOptions,
    description="MPS-CLIP's published sub-images from disk (LEAKY: stamped 'fail (as published)')",
    keyword_guided=False,
    derived_from_own_captions=True,
)
