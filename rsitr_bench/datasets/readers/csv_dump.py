"""CSV dumps of the caption sets, in the two shapes that circulate.

- Per image (VT-RSBS ``metadata/<DS>/<DS>.csv``): ``,filename[,img_id],split[,label][,sent_id],sentence``,
  where ``sentence`` is a *Python literal* list of captions (single quotes, so not JSON). Rows are sorted
  by file name or shuffled; when an ``img_id`` column exists (it equals the Karpathy ``imgid``) the rows are
  put back in that order, so the split keeps the dataset's order.
- Per caption (ITRA / GeoRSCLIP / EBAKER / SkyCLIP ``*_test.csv``): ``filename,title`` or
  ``filepath,title``, grouped by image in order of first appearance. The RSICD file is GB18030-encoded.
"""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

from rsitr_bench.data.annotations import (
    ImageRecord,
    basename,
    data_error,
    expect_nonempty,
    guarded,
    read_text,
)

ENCODINGS = ("utf-8-sig", "gb18030")


@guarded
def read_csv(file: Path) -> list[ImageRecord]:
    """Read a per-image (VT-RSBS) or per-caption (``filename,title``) CSV file."""
    text = read_text(file, ENCODINGS)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise data_error(file, "line 1", "the file is empty")
        columns = {name.strip().lower(): k for k, name in enumerate(header)}
        path_column = columns.get("filename", columns.get("filepath"))
        if path_column is not None and "sentence" in columns:
            return expect_nonempty(_per_image(reader, columns, path_column, file), file)
        if path_column is not None and "title" in columns:
            return expect_nonempty(_per_caption(reader, columns["title"], path_column, file), file)
        raise data_error(file, "line 1 (header)", f"unknown columns {header[:8]}: expected 'filename' with "
                         "'sentence' (VT-RSBS) or 'filename'/'filepath' with 'title'",
                         "Check that this is a caption CSV, or choose the right reader with --format")
    except csv.Error as exc:
        raise data_error(file, f"line {reader.line_num}", f"malformed CSV ({exc})") from None


def _cell(row: list[str], column: int, file: Path, line: int, name: str) -> str:
    if column >= len(row):
        raise data_error(file, f"line {line}", f"the row has {len(row)} cells and no {name!r} value",
                         "Repair the row or download the file again")
    return row[column]


def _per_image(reader, columns: dict[str, int], path_column: int, file: Path) -> list[ImageRecord]:
    rows = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank separator lines hold no record
        ref = _cell(row, path_column, file, line, "filename").strip()
        if not basename(ref).strip():
            raise data_error(file, f"line {line}", "the 'filename' cell names no image file")
        where = f"line {line} {ref!r}"
        captions = _literal_captions(_cell(row, columns["sentence"], file, line, "sentence"), file, where)
        split = _cell(row, columns["split"], file, line, "split").strip() if "split" in columns else None
        label = _cell(row, columns["label"], file, line, "label").strip() if "label" in columns else None
        img_id = _cell(row, columns["img_id"], file, line, "img_id").strip() if "img_id" in columns else ""
        rows.append((img_id, ImageRecord(ref=ref, captions=captions, file=file, where=where, split=split,
                                         label=label or None)))
    if rows and all(img_id.isdigit() for img_id, _ in rows):
        rows.sort(key=lambda pair: int(pair[0]))
    return [record for _, record in rows]


def _literal_captions(cell: str, file: Path, where: str) -> tuple[str, ...]:
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise data_error(file, where, f"the 'sentence' cell is not a Python list literal: {cell[:60]!r}",
                         "Repair the row or download the file again") from None
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise data_error(file, where, "the 'sentence' cell is not a list of caption texts")
    if not value:
        raise data_error(file, where, "the record has no captions (the 'sentence' list is empty)",
                         "Add the image's captions or remove the row")
    return tuple(value)


def _per_caption(reader, title_column: int, path_column: int, file: Path) -> list[ImageRecord]:
    grouped: dict[str, tuple[str, list[str]]] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        ref = _cell(row, path_column, file, line, "filename").strip()
        if not basename(ref).strip():
            raise data_error(file, f"line {line}", "the file-name cell names no image file")
        title = _cell(row, title_column, file, line, "title")
        grouped.setdefault(ref, (f"line {line} {ref!r}", []))[1].append(title)
    return [ImageRecord(ref=ref, captions=tuple(texts), file=file, where=where)
            for ref, (where, texts) in grouped.items()]
