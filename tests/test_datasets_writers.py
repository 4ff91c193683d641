"""Fixture writers: the same small content written in every annotation format the readers support.

The other ``test_datasets_*`` modules import these. Captions carry the quirks of the real files (padding
duplicates, a caption shared by two images, a blank caption, a trailing space, an apostrophe, non-ASCII
text) so that every format has to carry them through unchanged for the fingerprints to agree.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Item:
    name: str
    split: str
    captions: tuple[str, ...]
    label: str | None = None


def make_items(sizes: dict[str, int], ext: str = ".tif", classed: bool = True, quirks: bool = True) -> list[Item]:
    """Images ``<class>_<n><ext>`` (or ``<n><ext>``) with five captions each, split as ``sizes`` says.

    Splits are interleaved rather than contiguous, as in the real files, so nothing can compute them.
    """
    keyed = sorted(((j + 0.5) / n, k, split) for k, (split, n) in enumerate(sizes.items()) for j in range(n))
    order = [split for _, _, split in keyed]
    items = []
    for n, split in enumerate(order):
        label = ("beach", "forest", "port")[n % 3] if classed else None
        name = f"{label}_{n}{ext}" if classed else f"{n + 1}{ext}"
        captions = [f"There is a {label or 'scene'} number {n} ."]
        captions += [f"caption {k} of image {n} ." for k in range(1, 5)]
        if quirks and n % 7 == 0:
            captions[4] = captions[3]  # padding by repetition
        if quirks and n % 11 == 1:
            captions[2] = "A shared caption on two images ."  # ambiguous t2i query
        if quirks and n % 11 == 2:
            captions[2] = "A shared caption on two images ."
        if quirks and n == 3:
            captions[1] = ""
        if quirks and n == 4:
            captions[1] = "it's a café with trailing space "
        items.append(Item(name, split, tuple(captions), label))
    return items


def of_split(items: list[Item], *splits: str) -> list[Item]:
    return [it for it in items if it.split in splits]


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def karpathy_json(items: list[Item], dataset: str = "UCM") -> dict:
    images = []
    for i, it in enumerate(items):
        images.append({"sentids": list(range(5 * i, 5 * i + len(it.captions))), "imgid": i, "sentences": [
            {"tokens": c.split(), "raw": c, "imgid": i, "sentid": 5 * i + k} for k, c in enumerate(it.captions)],
            "split": it.split, "filename": it.name})
    return {"images": images, "dataset": dataset}


def write_karpathy(path: Path, items: list[Item]) -> Path:
    return write_json(path, karpathy_json(items))


def write_karpathy_split_files(folder: Path, items: list[Item]) -> None:
    for split in ("train", "val", "test"):
        if of_split(items, split):
            write_json(folder / f"data_{split}.json", karpathy_json(of_split(items, split)))


def write_finetune(folder: Path, ds: str, items: list[Item], file_split: dict[str, str] | None = None) -> None:
    """HarMA-style files: per-caption train, per-image val/test; images prefixed with the file's split."""
    file_split = file_split or {"train": "train", "val": "val", "test": "test"}
    for split, label in file_split.items():
        chosen = of_split(items, split)
        if not chosen:
            continue
        if label == "train":
            records = [{"caption": c, "image": f"train/{it.name}", "image_id": i, "label_name": it.label, "label": 0}
                       for i, it in enumerate(chosen) for c in it.captions]
        else:
            records = [{"image": f"{label}/{it.name}", "caption": list(it.captions)} for it in chosen]
        write_json(folder / f"{ds}_{label}.json", records)


def write_lsci(folder: Path, ds: str, items: list[Item]) -> None:
    for split in ("train", "val", "test"):
        records = [{"filename": f"UCM/{it.name}", "captions": list(it.captions)} for it in of_split(items, split)]
        if records:
            write_json(folder / f"{ds}_{split}_data.json", records)


def write_precomp(folder: Path, items: list[Item], file_label: str, repeated: bool, verify: bool = False) -> None:
    """One precomp pair: names once per image (train layout) or once per caption (test layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    tail = "_verify" if verify else ""
    caps = [c for it in items for c in it.captions]
    names = [it.name for it in items for _ in it.captions] if repeated else [it.name for it in items]
    (folder / f"{file_label}_caps{tail}.txt").write_text("".join(f"{c}\n" for c in caps), encoding="utf-8")
    (folder / f"{file_label}_filename{tail}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def write_vtrsbs_csv(path: Path, items: list[Item], labelled: bool = True) -> Path:
    """VT-RSBS layout: rows sorted by file name, captions as a Python literal list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(enumerate(items), key=lambda pair: pair[1].name)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "filename", "img_id", "split", *(["label"] if labelled else []), "sent_id", "sentence"])
        for row, (i, it) in enumerate(rows):
            writer.writerow([row, it.name, i, it.split, *([it.label] if labelled else []),
                             str(list(range(5 * i, 5 * i + 5))), repr(list(it.captions))])
    return path


def write_pairs_csv(path: Path, items: list[Item], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "title"])
        for it in items:
            for c in it.captions:
                writer.writerow([it.name, c])
    return path


def write_coco(path: Path, items: list[Item]) -> Path:
    images = [{"id": 100 + i, "file_name": it.name, "width": 500, "height": 500} for i, it in enumerate(items)]
    annotations = [{"id": len(images) * k + i, "image_id": 100 + i, "caption": c}
                   for i, it in enumerate(items) for k, c in enumerate(it.captions)]
    return write_json(path, {"info": {}, "licenses": [], "images": images, "annotations": annotations})


def write_lines(folder: Path, items: list[Item]) -> None:
    """luna97 layout: ``<stem> <sentence>`` lines without a final newline, plus per-split name lists."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{Path(it.name).stem} {c}" for it in items for c in it.captions]
    (folder / "descriptions_SIDNEY.txt").write_text("\n".join(lines), encoding="utf-8")
    for split in ("train", "val", "test"):
        names = [it.name for it in of_split(items, split)]
        if names:
            (folder / f"filenames_{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def write_nwpu(path: Path, items: list[Item]) -> Path:
    data: dict[str, list] = {}
    for i, it in enumerate(items):
        record = {"filename": it.name, "imgid": i, "split": it.split}
        for k, c in enumerate(it.captions):
            record["raw" if k == 0 else f"raw_{k}"] = c
            record["sentids" if k == 0 else f"sentids_{k}"] = 5 * i + k
        data.setdefault(it.label, []).append(record)
    return write_json(path, data)


def write_images(folder: Path, names: list[str], size: int = 8) -> None:
    """Tiny placeholder images whose format follows the extension (TIFF or JPEG)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (i % 256, 40, 90)).save(path)


def test_items_carry_every_quirk():
    items = make_items({"train": 30, "test": 10})
    captions = [c for it in items for c in it.captions]
    assert len(items) == 40 and len(captions) == 200
    assert "" in captions and any(c.endswith(" ") for c in captions)
    assert sum(c == "A shared caption on two images ." for c in captions) >= 2
    assert any(len(set(it.captions)) < 5 for it in items)
    changes = sum(a.split != b.split for a, b in zip(items, items[1:]))
    assert changes > 10  # interleaved, not one block per split
