"""The PIR / HarMA / MPS-CLIP ``data/finetune/*.json`` family, and its test-LSCI re-formatting.

Three record shapes occur, sometimes for the same dataset:

- per caption (train files): ``{"caption": str, "image": "train/<file>", "image_id", "label_name", ...}``;
- per image (val and test files): ``{"image": "test/<file>", "caption": [str, ...], ...}``;
- per image, test-LSCI: ``{"filename": "UCM/<file>", "captions": [str, ...]}``.

Per-caption records are grouped by image in order of first appearance; extra fields (``nouns`` of
MPS-CLIP, ``image_id``) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from rsitr_bench.data.annotations import (
    ImageRecord,
    data_error,
    expect_nonempty,
    expect_object,
    get_caption_list,
    get_image_ref,
    get_str,
    guarded,
    load_json,
    type_name,
)


@guarded
def read_finetune(file: Path) -> list[ImageRecord]:
    """Read a finetune json file (any of the three record shapes) into per-image records."""
    data = load_json(file)
    if not isinstance(data, list):
        raise data_error(file, "top level", f"expected a list of records, found {type_name(data)}",
                         "Check that this is a data/finetune json file, or choose the right reader with --format")
    grouped: dict[str, dict] = {}  # ref -> {"captions", "where", "label", "per_image"}
    for i, item in enumerate(data):
        where = f"record {i}"
        item = expect_object(item, file, where)
        if "filename" in item and "image" not in item:
            ref = get_image_ref(item, "filename", file, where)
            captions, per_image = get_caption_list(item, "captions", file, f"{where} {ref!r}"), True
        else:
            ref = get_image_ref(item, "image", file, where)
            value = item.get("caption")
            if isinstance(value, str):
                captions, per_image = (value,), False
            else:
                captions, per_image = get_caption_list(item, "caption", file, f"{where} {ref!r}"), True
        label = get_str(item, "label_name", file, f"{where} {ref!r}", required=False)
        entry = grouped.get(ref)
        if entry is None:
            grouped[ref] = {"captions": list(captions), "where": f"record {i} {ref!r}", "label": label,
                            "per_image": per_image}
        elif per_image or entry["per_image"]:
            raise data_error(file, f"{where} {ref!r}", f"image {ref!r} is listed again (first at "
                             f"{entry['where']})", "Remove the duplicate record")
        else:
            entry["captions"].extend(captions)
    records = [ImageRecord(ref=ref, captions=tuple(e["captions"]), file=file, where=e["where"], label=e["label"])
               for ref, e in grouped.items()]
    return expect_nonempty(records, file)
