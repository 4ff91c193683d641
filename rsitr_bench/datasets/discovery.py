"""Finding a dataset's annotation files under a data root, and which split each one provides.

The search looks a few folders deep, so an unpacked archive works wherever it landed, but it never enters
a folder named after *another* dataset (an AMFMN checkout holds ``rsicd_precomp/`` and ``rsitmd_precomp/``
with identical file names). The result is a list of candidate sources per split; the dataset picks one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rsitr_bench.datasets.catalog import CATALOG, DatasetInfo, SourcePattern
from rsitr_bench.datasets.readers import FORMATS

MAX_DEPTH = 4
# Split pairs whose union is the official train + val (the PIR/HarMA pair re-splits exactly those images).
UNION_PAIRS = (("train", "val"), ("pir_train", "pir_val"))
_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Source:
    """Where one split's records come from.

    Attributes:
        format: the reader family.
        files: the files handed to the reader (a pair for precomp and lines).
        rank: preference, lower first: (format position in FORMATS, pattern position in the catalog).
        labels: the split labels of this split's records: those kept from a whole-dataset file, or the
            label in a per-split file's name (records that carry another label are an error).
        known_labels: for a whole-dataset file, every split label the file may contain.
        parts: for a split made of other splits (train + val), their sources; ``files`` is then empty.
    """

    format: str
    files: tuple[Path, ...]
    rank: tuple[int, int]
    labels: frozenset[str] | None = None
    known_labels: frozenset[str] | None = None
    parts: tuple[Source, ...] = ()

    def describe(self, root: Path | None = None) -> str:
        """The files and format, for messages; paths relative to ``root`` when under it."""
        if self.parts:
            return " + ".join(part.describe(root) for part in self.parts)
        files = " + ".join(str(f.relative_to(root) if root and f.is_relative_to(root) else f) for f in self.files)
        only = f" [split {', '.join(sorted(self.labels))}]" if self.known_labels is not None else ""
        return f"{files}{only} ({self.format})"

    def all_files(self) -> list[Path]:
        return [f for part in self.parts for f in part.all_files()] if self.parts else list(self.files)


def _other_aliases(info: DatasetInfo) -> set[str]:
    return {alias for other in CATALOG.values() if other.name != info.name for alias in other.aliases}


def _annotation_files(info: DatasetInfo, root: Path) -> list[Path]:
    """Files under ``root`` (at most MAX_DEPTH folders down), skipping hidden folders and other datasets'."""
    skip = _other_aliases(info)
    found = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH
                         and not skip.intersection(_WORD.split(d.lower())))
        found.extend(Path(folder) / f for f in sorted(files) if f.lower().endswith((".json", ".txt", ".csv")))
    return found


def _companion(file: Path, pattern: SourcePattern, label: str) -> Path:
    """The second file of a pair, matched case-insensitively in the same folder."""
    wanted = pattern.companion.format(s=label)
    for sibling in file.parent.iterdir():
        if sibling.name.lower() == wanted.lower():
            return sibling
    return file.parent / wanted  # absent: reading it gives the "file does not exist" error


def find_sources(info: DatasetInfo, root: Path, formats: tuple[str, ...] | None = None) -> dict[str, list[Source]]:
    """Every candidate source per split name found under ``root``, including derived ``trainval``.

    Arguments:
        formats: restrict the search to these format families (``--format``); None searches all.
    """
    order = list(FORMATS)
    found: dict[str, list[Source]] = {}
    for file in _annotation_files(info, root):
        for k, pattern in enumerate(info.patterns):
            if formats is not None and pattern.format not in formats:
                continue
            match = re.fullmatch(pattern.regex, file.name, flags=re.IGNORECASE)
            if not match:
                continue
            rank = (order.index(pattern.format), k)
            if pattern.whole:
                known = frozenset(pattern.splits)
                for name in dict.fromkeys(pattern.splits.values()):
                    labels = frozenset(lb for lb, n in pattern.splits.items() if n == name)
                    found.setdefault(name, []).append(Source(pattern.format, (file,), rank, labels, known))
            else:
                label = match.group("s").lower()
                files = (file, _companion(file, pattern, label)) if pattern.companion else (file,)
                source = Source(pattern.format, files, rank, frozenset({label}))
                found.setdefault(pattern.splits[label], []).append(source)
            break
    direct = {source.format for source in found.get("trainval", [])}
    for train_name, val_name in UNION_PAIRS:
        for train in _best_per_format(found.get(train_name, [])):
            for val in _best_per_format(found.get(val_name, [])):
                if train.format == val.format and train.format not in direct:
                    found.setdefault("trainval", []).append(_union(train, val))
                    direct.add(train.format)
    return found


def _best_per_format(sources: list[Source]) -> list[Source]:
    best: dict[str, Source] = {}
    for source in sorted(sources, key=lambda s: s.rank):
        best.setdefault(source.format, source)
    return list(best.values())


def _union(train: Source, val: Source) -> Source:
    """train + val: one pass over a whole-dataset file (keeping its order), else the two files in turn."""
    rank = max(train.rank, val.rank)
    if train.files == val.files and train.known_labels is not None:
        return Source(train.format, train.files, rank, train.labels | val.labels, train.known_labels)
    return Source(train.format, (), rank, parts=(train, val))
