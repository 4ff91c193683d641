"""NWPU-Captions' class-keyed json (``dataset_nwpu.json``).

``{"airplane": [{"filename", "imgid", "split", "raw", "raw_1", ..., "raw_4", "sentids", ...}, ...], ...}``:
one list per scene class, five captions per record spread over ``raw`` and ``raw_<k>``. The class key is
also the image's folder in NWPU-RESISC45 (``NWPU_images/<class>/<file>``), so it becomes part of the path.
"""

from __future__ import annotations

import re
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

_CAPTION_KEY = re.compile(r"raw(?:_(\d+))?")


@guarded
def read_nwpu(file: Path) -> list[ImageRecord]:
    """Read every record of a class-keyed NWPU json file, class by class in file order."""
    data = load_json(file)
    if not isinstance(data, dict):
        raise data_error(file, "top level", f"expected an object keyed by scene class, found {type_name(data)}",
                         "Check that this is dataset_nwpu.json, or choose the right reader with --format")
    records = []
    for label, items in data.items():
        if not isinstance(items, list):
            raise data_error(file, f"class {label!r}", f"the value is {type_name(items)}, expected a list of "
                             "image records", "Check that this is dataset_nwpu.json, or use --format")
        for i, item in enumerate(items):
            where = f"class {label!r}, record {i}"
            item = expect_object(item, file, where)
            name = get_image_ref(item, "filename", file, where)
            where = f"class {label!r}, record {i} {name!r}"
            split = get_str(item, "split", file, where, required=False)
            keys = sorted((int(m.group(1) or 0), key) for key in item if (m := _CAPTION_KEY.fullmatch(key)))
            if not keys:
                raise data_error(file, where, "the record has no captions (no 'raw' or 'raw_<k>' field)",
                                 "Add the image's captions or remove the record")
            captions = tuple(get_str(item, key, file, where) for _, key in keys)
            records.append(ImageRecord(ref=f"{label}/{name}", captions=captions, file=file, where=where,
                                       split=split, label=label))
    return expect_nonempty(records, file)
