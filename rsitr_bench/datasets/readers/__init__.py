"""One reader per annotation format family.

Every reader returns :class:`ImageRecord` objects in file order or raises
:class:`~rsitr_bench.errors.DataError`; nothing else escapes (the property tests feed them mangled files).
:data:`FORMATS` is ordered by preference: when several formats of a split are on disk, the earlier one
wins, because it is closer to the dataset's original text (raw captions before tokenised or
re-punctuated copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rsitr_bench.data.annotations import ImageRecord, basename
from rsitr_bench.datasets.readers.coco import read_coco
from rsitr_bench.datasets.readers.csv_dump import read_csv
from rsitr_bench.datasets.readers.finetune import read_finetune
from rsitr_bench.datasets.readers.karpathy import read_karpathy
from rsitr_bench.datasets.readers.lines import read_lines
from rsitr_bench.datasets.readers.nwpu import read_nwpu
from rsitr_bench.datasets.readers.precomp import read_precomp


@dataclass(frozen=True)
class Format:
    """A format family: its reader (called with the files a source names, in order) and a description."""

    name: str
    read: Callable[..., list[ImageRecord]]
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("karpathy", read_karpathy, "Karpathy-style json: dataset_*.json, or one data_{split}.json per split"),
    Format("nwpu-json", read_nwpu, "NWPU-Captions' class-keyed dataset_nwpu.json"),
    Format("finetune", read_finetune, "PIR/HarMA/MPS-CLIP data/finetune/<ds>_{split}.json (and test-LSCI)"),
    Format("coco", read_coco, "COCO-captions json"),
    Format("precomp", read_precomp, "AMFMN precomp {split}_caps.txt + {split}_filename.txt"),
    Format("lines", read_lines, "descriptions_<DS>.txt + filenames_{split}.txt"),
    Format("csv", read_csv, "CSV dumps: VT-RSBS per-image <DS>.csv, or filename,title per-caption files"),
)}


def read_records(format_name: str, files: tuple[Path, ...]) -> list[ImageRecord]:
    """Read one annotation source (a file, or a file pair for precomp and lines) with its format's reader."""
    return FORMATS[format_name].read(*files)


__all__ = ["FORMATS", "Format", "ImageRecord", "basename", "read_records", "read_coco", "read_csv",
           "read_finetune", "read_karpathy", "read_lines", "read_nwpu", "read_precomp"]
