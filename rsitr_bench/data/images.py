"""Image decoding: every image becomes an RGB PIL image, or a DataError that names the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rsitr_bench.errors import DataError


def load_rgb(path: Path, record: str = "") -> Image.Image:
    """Decode an image file (JPEG, PNG, TIFF, ...) and convert it to RGB.

    Arguments:
        path: the image file.
        record: what refers to the image (e.g. "rsitmd test record 12"), for the error message.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise missing_image(path, record) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise unreadable_image(path, record, exc) from None


def missing_image(path: Path, record: str = "") -> DataError:
    """The error for an image file that does not exist (also raised by the decoded-image cache, which reads
    the file's bytes before it decodes anything)."""
    return DataError(f"Image file {path} does not exist{_referenced_by(record)}. Check --data-root and the "
                     f"dataset's image folder (`rsitr-bench data verify` lists every missing file).")


def unreadable_image(path: Path, record: str, exc: BaseException) -> DataError:
    """The error for an image file that exists but cannot be read or decoded."""
    return DataError(f"Image file {path} could not be decoded{_referenced_by(record)}: {exc}. Replace the file "
                     f"with a valid JPEG, PNG or TIFF, or check that its extension matches its content.")


def _referenced_by(record: str) -> str:
    return f" (referenced by {record})" if record else ""
