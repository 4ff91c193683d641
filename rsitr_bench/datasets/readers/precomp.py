"""The AMFMN "precomp" text files: ``{split}_caps.txt`` plus ``{split}_filename.txt``.

One caption per line, five consecutive lines per image. The file-name list comes in two layouts, and
both are read: one line per image (train files, N names for 5N captions) or one line per caption (test
files, each name repeated five times). Any other pair of line counts is an error, never a guess.
"""

from __future__ import annotations

from pathlib import Path

from rsitr_bench.data.annotations import (
    ImageRecord,
    basename,
    data_error,
    expect_nonempty,
    guarded,
    read_text,
    split_lines,
)

CAPTIONS_PER_IMAGE = 5


@guarded
def read_precomp(caps_file: Path, names_file: Path) -> list[ImageRecord]:
    """Pair a captions file with its file-name list; detects the layout from the line counts."""
    captions = split_lines(read_text(caps_file))
    names = split_lines(read_text(names_file))
    for n, name in enumerate(names):
        if not basename(name).strip():
            raise data_error(names_file, f"line {n + 1}", f"the line {name!r} names no image file",
                             "Remove the blank line or restore the file name")
    if len(names) == len(captions):
        owner_line = list(range(len(captions)))
    elif len(captions) == CAPTIONS_PER_IMAGE * len(names):
        owner_line = [i // CAPTIONS_PER_IMAGE for i in range(len(captions))]
        seen: dict[str, int] = {}
        for n, name in enumerate(names):
            if name.strip() in seen:
                raise data_error(names_file, f"line {n + 1}", f"image {name.strip()!r} is listed again (first "
                                 f"at line {seen[name.strip()] + 1})", "Remove the duplicate line")
            seen[name.strip()] = n
    else:
        raise data_error(
            names_file, "whole file",
            f"{len(names)} file-name lines do not match the {len(captions)} caption lines of {caps_file.name} "
            f"(expected either equal counts or {CAPTIONS_PER_IMAGE} captions per name)",
            "The two files come from different versions or one is truncated: download both again")
    grouped: dict[str, tuple[int, list[str]]] = {}
    for i, text in enumerate(captions):
        ref = names[owner_line[i]].strip()
        grouped.setdefault(ref, (owner_line[i], []))[1].append(text)
    records = [ImageRecord(ref=ref, captions=tuple(texts), file=names_file, where=f"line {line + 1} {ref!r}")
               for ref, (line, texts) in grouped.items()]
    return expect_nonempty(records, caps_file)
