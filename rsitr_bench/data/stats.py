"""What is in a split, whether its images are usable, and why two copies of a split differ.

The counts here are the ones that change published numbers without anyone noticing: blank captions,
captions repeated within an image (padding to five), and captions shared by several images, which make
text-to-image queries ambiguous under the standard protocol (ground truth = the caption's own image).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.data.text import normalize_text
from rsitr_bench.errors import DataError

# What PIL reports for each image file suffix; a mismatch means the extension lies about the content.
PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG"}


def _texts_by_image(split: Split, normalization: str) -> list[list[str]]:
    per_image: list[list[str]] = [[] for _ in range(split.n_images)]
    for text, owner in zip(split.captions, split.caption_image.tolist()):
        per_image[owner].append(normalize_text(text, normalization))
    return per_image


def split_stats(split: Split, normalization: str = "none") -> dict[str, Any]:
    """Counts of one split, after the given caption normalisation (see the module docstring)."""
    per_image = _texts_by_image(split, normalization)
    images_of: dict[str, set[int]] = defaultdict(set)
    blank = duplicates = images_with_duplicates = 0
    for i, texts in enumerate(per_image):
        counts = Counter(texts)
        extra = sum(n - 1 for n in counts.values())
        duplicates += extra
        images_with_duplicates += extra > 0
        blank += sum(n for text, n in counts.items() if not text.strip())
        for text in counts:
            images_of[text].add(i)
    shared = {text: owners for text, owners in images_of.items() if len(owners) > 1}
    sizes = [len(texts) for texts in per_image]
    skipped = split.annotations.get("skipped", [])
    return {
        "dataset": split.dataset,
        "split": split.name,
        "format": split.annotations.get("format"),
        "source": split.source,
        "normalization": normalization,
        "images": split.n_images,
        "captions": split.n_captions,
        "captions_per_image": {"min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / len(sizes), 3),
                               "histogram": dict(sorted(Counter(sizes).items()))},
        "distinct_captions": len(images_of),
        "blank_captions": blank,
        "duplicate_captions_within_image": duplicates,
        "images_with_duplicate_captions": images_with_duplicates,
        "captions_shared_across_images": len(shared),
        "images_sharing_a_caption": len(set().union(*shared.values())) if shared else 0,
        "most_images_per_shared_caption": max((len(owners) for owners in shared.values()), default=0),
        "ambiguous_t2i_queries": sum(1 for texts in per_image for text in texts if text in shared),
        "skipped_records": len(skipped),
        "skipped": list(skipped),
        "fingerprint": split.fingerprint(normalization),
    }


def verify_images(split: Split, already_checked: set[Path] | None = None) -> dict[str, Any]:
    """Check that every image of a split exists, decodes to RGB, and has an extension matching its content.

    Arguments:
        already_checked: paths verified for an earlier split (``trainval`` repeats ``train``); updated.
    """
    checked = already_checked if already_checked is not None else set()
    problems, count = [], 0
    for name, path in zip(split.image_names, split.image_paths):
        path = Path(path)
        if path in checked:
            continue
        checked.add(path)
        count += 1
        problem = _image_problem(path, f"{split.dataset} {split.name} image {name!r}")
        if problem:
            problems.append({"split": split.name, "image": name, "path": str(path), "problem": problem})
    return {"split": split.name, "checked": count, "problems": problems}


def _image_problem(path: Path, record: str) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        load_rgb(path, record)
        with Image.open(path) as img:
            actual = img.format
    except DataError as exc:
        return f"does not decode: {exc}"
    except OSError as exc:  # Image.open after a successful decode: the file changed under us
        return f"does not decode: {exc}"
    expected = PIL_FORMATS.get(path.suffix.lower())
    if expected and actual != expected:
        return f"wrong extension: {path.suffix} but the content is {actual}; rename the file or re-encode it"
    return None


def diff_splits(a: Split, b: Split, normalization: str = "none") -> dict[str, Any]:
    """Why two copies of a split have different fingerprints: images in one only, captions that differ.

    Images are matched by file name and captions compared as multisets per image (order is not content;
    a caption repeated five times differs from one written once).
    """
    texts_a = dict(zip(a.image_names, _texts_by_image(a, normalization)))
    texts_b = dict(zip(b.image_names, _texts_by_image(b, normalization)))
    differences = []
    for name, captions in texts_a.items():
        if name not in texts_b:
            continue
        count_a, count_b = Counter(captions), Counter(texts_b[name])
        if count_a != count_b:
            differences.append({"image": name, "only_in_a": sorted((count_a - count_b).elements()),
                                "only_in_b": sorted((count_b - count_a).elements())})
    fingerprint_a, fingerprint_b = a.fingerprint(normalization), b.fingerprint(normalization)
    return {
        "normalization": normalization,
        "a": {"dataset": a.dataset, "split": a.name, "source": a.source, "fingerprint": fingerprint_a},
        "b": {"dataset": b.dataset, "split": b.name, "source": b.source, "fingerprint": fingerprint_b},
        "same_fingerprint": fingerprint_a == fingerprint_b,
        "only_in_a": [name for name in texts_a if name not in texts_b],
        "only_in_b": [name for name in texts_b if name not in texts_a],
        "images_in_both": sum(1 for name in texts_a if name in texts_b),
        "images_with_caption_differences": len(differences),
        "differences": differences,
    }
