"""Plain-text descriptions: ``descriptions_SIDNEY.txt`` plus ``filenames_{train,val,test}.txt``.

Each description line is ``<stem> <sentence>`` (the stem is the image file name without extension), five
consecutive lines per image, and the last line has no newline. A file-name list gives one split, in order.
The sentence is kept exactly, trailing spaces included: 13 Sydney lines end in a space.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from rsitr_bench.data.annotations import (
    ImageRecord,
    basename,
    data_error,
    expect_nonempty,
    guarded,
    read_text,
    split_lines,
)


@guarded
def read_lines(names_file: Path, descriptions_file: Path) -> list[ImageRecord]:
    """The images of one file-name list, each with its captions from the descriptions file."""
    by_stem: dict[str, list[str]] = {}
    for n, line in enumerate(split_lines(read_text(descriptions_file))):
        if not line.strip():
            continue  # a blank line names no image, so it holds no caption
        stem, _, sentence = line.partition(" ")
        if not stem:
            raise data_error(descriptions_file, f"line {n + 1}", f"the line {line[:40]!r} does not start with "
                             "an image number", "Repair the line or download the file again")
        by_stem.setdefault(stem, []).append(sentence)
    records = []
    seen: dict[str, int] = {}
    for n, line in enumerate(split_lines(read_text(names_file))):
        ref = line.strip()
        if not basename(ref).strip():
            raise data_error(names_file, f"line {n + 1}", f"the line {line!r} names no image file",
                             "Remove the blank line or restore the file name")
        if ref in seen:
            raise data_error(names_file, f"line {n + 1}", f"image {ref!r} is listed again (first at line "
                             f"{seen[ref] + 1})", "Remove the duplicate line")
        seen[ref] = n
        stem = PurePosixPath(basename(ref)).stem
        if stem not in by_stem:
            raise data_error(names_file, f"line {n + 1} {ref!r}", f"the image has no captions in "
                             f"{descriptions_file.name} (no line starts with {stem!r})",
                             "Use the descriptions file that belongs to this list, or download both again")
        records.append(ImageRecord(ref=ref, captions=tuple(by_stem[stem]), file=names_file,
                                   where=f"line {n + 1} {ref!r}"))
    return expect_nonempty(records, names_file)
