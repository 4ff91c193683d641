"""What every annotation reader shares (the dataset readers, and the plugins that read annotation files of
their own): the record type, decoding, json parsing and error messages.

A reader's contract is strict: it returns :class:`ImageRecord` objects in file order, or raises
:class:`~rsitr_bench.errors.DataError` naming the file, the record and what to do. Files in the wild are
truncated, mis-encoded and hand-edited, so every value is type-checked here rather than trusted.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rsitr_bench.errors import DataError

T = TypeVar("T")

# What a user can do about a malformed annotation file, whatever the format.
REFETCH = ("Download the file again from the dataset's source (see docs/datasets.md), or read another "
           "annotation format of the same dataset with --format")


@dataclass(frozen=True)
class ImageRecord:
    """One image and its captions, as one annotation file gives them.

    Attributes:
        ref: the image path as written in the file; it may carry prefixes such as ``train/`` or ``UCM/``.
        captions: the caption texts in file order, unnormalised (blank ones included).
        file: the annotation file that holds the record.
        where: the record's position in that file, for messages (e.g. ``images[12] '13.tif'``).
        split: the split label the record carries (``train``/``val``/``test``), if the format has one.
        label: the scene class the record carries, if the format has one.
    """

    ref: str
    captions: tuple[str, ...]
    file: Path
    where: str
    split: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        """The image's file name without any folder: the format-independent id fingerprints use."""
        return basename(self.ref)


def basename(ref: str) -> str:
    return ref.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def data_error(file: Path, where: str, problem: str, fix: str = REFETCH) -> DataError:
    """A DataError in the one shape every reader uses: file, record, problem, remedy."""
    location = f"{file} ({where})" if where else str(file)
    return DataError(f"{location}: {problem}. {fix}.")


def guarded(reader: Callable[..., T]) -> Callable[..., T]:
    """Turn any unexpected exception of a reader into a DataError naming the file.

    Readers validate every value explicitly; this is the safety net that keeps the documented contract
    ("a reader raises DataError and nothing else") even for damage nobody anticipated.
    """

    @functools.wraps(reader)
    def wrapper(file: Path, *args: Any, **kwargs: Any) -> T:
        try:
            return reader(file, *args, **kwargs)
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OSError) as exc:
            raise data_error(Path(file), "", f"unexpected content ({type(exc).__name__}: {exc})") from exc

    return wrapper


def read_text(file: Path, encodings: Iterable[str] = ("utf-8-sig",)) -> str:
    """Read a text file, trying each encoding in turn; name the first undecodable byte if all fail."""
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise data_error(file, "", "the file does not exist",
                         "Put it under --data-root as docs/datasets.md shows") from None
    except OSError as exc:
        raise data_error(file, "", f"the file cannot be read ({exc.strerror or exc})",
                         "Check the file's permissions") from None
    first_error: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    assert first_error is not None
    bad = data[first_error.start:first_error.start + 1].hex()
    tried = ", ".join(encodings)
    raise data_error(file, f"byte offset {first_error.start}",
                     f"the file is not text in the expected encoding ({tried}): byte 0x{bad} cannot be decoded",
                     "Re-save the file as UTF-8, or download it again") from None


def load_json(file: Path) -> Any:
    """Parse a json file; a syntax error names line, column and character offset (truncation shows)."""
    text = read_text(file)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = " (the end of the file: it is truncated)" if exc.pos >= len(text.rstrip()) else ""
        raise data_error(
            file, f"line {exc.lineno}, column {exc.colno}, character offset {exc.pos} of {len(text)}",
            f"invalid JSON: {exc.msg}{truncated}") from None
    except RecursionError:
        raise data_error(file, "", "invalid JSON: nested too deeply") from None


def split_lines(text: str) -> list[str]:
    """Split on newlines only, keeping blank lines and trailing spaces (both are data in caption files).

    A final newline ends the last line rather than starting an empty one; ``\\r\\n`` endings are accepted.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def get_str(record: Mapping[str, Any], key: str, file: Path, where: str, required: bool = True) -> str | None:
    """``record[key]`` as text; a missing (when required) or non-text value is a DataError."""
    if key not in record:
        if required:
            raise data_error(file, where, f"the record has no {key!r} field")
        return None
    value = record[key]
    if not isinstance(value, str):
        raise data_error(file, where, f"{key!r} is {type_name(value)}, expected text")
    return value


def get_image_ref(record: Mapping[str, Any], key: str, file: Path, where: str) -> str:
    """The image path of a record: non-empty text that names a file, not a folder."""
    ref = get_str(record, key, file, where)
    assert ref is not None
    if not basename(ref).strip():
        raise data_error(file, where, f"{key!r} is {ref!r}, which names no image file")
    return ref


def get_caption_list(record: Mapping[str, Any], key: str, file: Path, where: str) -> tuple[str, ...]:
    """``record[key]`` as a non-empty list of caption texts (a record without captions cannot be evaluated)."""
    if key not in record:
        raise data_error(file, where, f"the record has no {key!r} field (no captions)",
                         "Add the image's captions or remove the record")
    value = record[key]
    if not isinstance(value, list):
        raise data_error(file, where, f"{key!r} is {type_name(value)}, expected a list of captions")
    if not value:
        raise data_error(file, where, f"the record has no captions ({key!r} is empty)",
                         "Add the image's captions or remove the record")
    for k, text in enumerate(value):
        if not isinstance(text, str):
            raise data_error(file, f"{where}, caption {k}", f"the caption is {type_name(value[k])}, expected text")
    return tuple(value)


def expect_object(value: Any, file: Path, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise data_error(file, where, f"the record is {type_name(value)}, expected an object")
    return value


def expect_nonempty(records: list[ImageRecord], file: Path) -> list[ImageRecord]:
    if not records:
        raise data_error(file, "", "the file holds zero images",
                         "Download the file again, or remove it so another file provides the split")
    return records
