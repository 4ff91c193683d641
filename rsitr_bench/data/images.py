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
    where = f" (referenced by {record})" if record else ""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"Image file {path} does not exist{where}. Check --data-root and the dataset's "
                        f"image folder (`rsitr-bench data verify` lists every missing file).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"Image file {path} could not be decoded{where}: {exc}. Replace the file with a valid "
                        f"JPEG, PNG or TIFF, or check that its extension matches its content.") from None
