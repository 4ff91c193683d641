"""COCO-captions json: ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}]}``.

Images keep the order of the ``images`` list and captions the order of ``annotations``. The ``width`` and
``height`` fields are ignored: the UCM copies state 500×500 for 256×256 images.
"""

from __future__ import annotations

from pathlib import Path

from rsitr_bench.data.annotations import (
    ImageRecord,
    data_error,
    expect_nonempty,
    expect_object,
    get_image_ref,
    get_str,
    guarded,
    load_json,
    type_name,
)


def _image_id(record: dict, key: str, file: Path, where: str) -> int | str:
    if key not in record:
        raise data_error(file, where, f"the record has no {key!r} field")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise data_error(file, where, f"{key!r} is {type_name(value)}, expected a number or text")
    return value


@guarded
def read_coco(file: Path) -> list[ImageRecord]:
    """Read a COCO-captions json file into per-image records."""
    data = load_json(file)
    if not isinstance(data, dict):
        raise data_error(file, "top level", f"expected an object, found {type_name(data)}",
                         "Check that this is a COCO-captions file, or choose the right reader with --format")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise data_error(file, "top level", f"{key!r} is {type_name(data.get(key))}, expected a list",
                             "Check that this is a COCO-captions file, or choose the right reader with --format")
    images: dict[int | str, tuple[str, str, list[str]]] = {}
    for i, item in enumerate(data["images"]):
        where = f"images[{i}]"
        item = expect_object(item, file, where)
        image_id = _image_id(item, "id", file, where)
        ref = get_image_ref(item, "file_name", file, where)
        if image_id in images:
            raise data_error(file, f"{where} {ref!r}", f"image id {image_id!r} is used again (first by "
                             f"{images[image_id][1]})", "Remove the duplicate image record")
        images[image_id] = (ref, f"{where} {ref!r}", [])
    for j, item in enumerate(data["annotations"]):
        where = f"annotations[{j}]"
        item = expect_object(item, file, where)
        image_id = _image_id(item, "image_id", file, where)
        caption = get_str(item, "caption", file, where)
        if image_id not in images:
            raise data_error(file, where, f"the caption belongs to image id {image_id!r}, which no image "
                             "record has", "Download the file again; it is inconsistent")
        images[image_id][2].append(caption)
    records = []
    for ref, where, captions in images.values():
        if not captions:
            raise data_error(file, where, "the image has no captions (no annotation refers to its id)",
                             "Add its captions or remove the image record")
        records.append(ImageRecord(ref=ref, captions=tuple(captions), file=file, where=where))
    return expect_nonempty(records, file)
