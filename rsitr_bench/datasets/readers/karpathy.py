"""Karpathy-style json: the original distribution format of RSICD, RSITMD, UCM-Captions and Sydney-Captions.

``{"images": [{"filename", "split", "sentences": [{"raw", "tokens", ...}, ...], ...}, ...], "dataset"}``.
The same schema comes as one file for all splits (``dataset_rsicd.json``) or one file per split
(``data_val.json``). Captions are taken from ``raw``: the ``tokens`` lists of UCM and Sydney were edited
separately (typos fixed or added, final periods dropped), so they are not the dataset's text.
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


@guarded
def read_karpathy(file: Path) -> list[ImageRecord]:
    """Read every image record of a Karpathy-style json file, in file order."""
    data = load_json(file)
    if not isinstance(data, dict) or "images" not in data:
        raise data_error(file, "top level", f"expected an object with an 'images' list, found {type_name(data)}"
                         + (f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else ""),
                         "Check that this is a Karpathy-style file, or choose the right reader with --format")
    images = data["images"]
    if not isinstance(images, list):
        raise data_error(file, "top level", f"'images' is {type_name(images)}, expected a list")
    records = []
    for i, item in enumerate(images):
        where = f"images[{i}]"
        item = expect_object(item, file, where)
        ref = get_image_ref(item, "filename", file, where)
        where = f"images[{i}] {ref!r}"
        split = get_str(item, "split", file, where, required=False)
        sentences = item.get("sentences")
        if not isinstance(sentences, list):
            raise data_error(file, where, f"'sentences' is {type_name(sentences)}, expected a list")
        if not sentences:
            raise data_error(file, where, "the record has no captions ('sentences' is empty)",
                             "Add the image's sentences or remove the record")
        captions = []
        for k, sentence in enumerate(sentences):
            sentence = expect_object(sentence, file, f"{where}, sentence {k}")
            raw = get_str(sentence, "raw", file, f"{where}, sentence {k}")
            captions.append(raw)
        records.append(ImageRecord(ref=ref, captions=tuple(captions), file=file, where=where, split=split))
    return expect_nonempty(records, file)
