"""The dataset plugins for RSICD, RSITMD, UCM-Captions, Sydney-Captions and NWPU-Captions.

A :class:`RealDataset` looks under ``--data-root`` for the annotation files of any supported format,
reads the official splits from them (never computing a split), checks every record and resolves every
image. What it cannot do it says, naming the file it needs: it never downloads anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from rsitr_bench.api import DatasetSpec
from rsitr_bench.data.model import Split
from rsitr_bench.datasets.catalog import CATALOG, SELECTION_PAIRS, SPLIT_MEANINGS, DatasetInfo
from rsitr_bench.datasets.discovery import MAX_DEPTH, Source, find_sources
from rsitr_bench.datasets.readers import FORMATS, ImageRecord, read_records
from rsitr_bench.datasets.resolve import ImageFinder, candidate_paths, image_root
from rsitr_bench.errors import ConfigError, DataError


@dataclass
class RealDatasetOptions:
    """Options of the real datasets.

    Attributes:
        format: ``auto`` reads each split from the most original format on disk; a format name
            (``karpathy``, ``nwpu-json``, ``finetune``, ``coco``, ``precomp``, ``lines``, ``csv``) reads only
            that format.
        image_root: the image folder, absolute or relative to the data root; by default the first of the
            dataset's usual folders (``images/``, ``RSICD_images/``, ...) that exists, else the data root.
        allow_missing_images: skip records whose image file is missing instead of failing; the split's
            ``annotations["skipped"]`` and ``rsitr-bench data stats`` list each one.
    """

    format: str = "auto"
    image_root: str | None = None
    allow_missing_images: bool = False


class RealDataset:
    """One of the published datasets, found under a data root."""

    def __init__(self, info: DatasetInfo, root: Path | None, options: RealDatasetOptions):
        self.info, self.options = info, options
        if root is None:
            raise DataError(f"Dataset {info.name!r} needs --data-root DIR. {info.download_help()}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"--data-root {self.root} is not a folder. {info.download_help()}")
        if options.format != "auto" and options.format not in info.formats:
            raise DataError(f"--format {options.format!r} is not a format {info.title} is read from; choose "
                            f"auto or one of {', '.join(info.formats)} (all formats: {', '.join(FORMATS)}).")
        self._formats = None if options.format == "auto" else (options.format,)
        self._sources = find_sources(info, self.root, self._formats)
        if not self._sources:
            raise self._nothing_found()
        self._records_cache: dict[tuple[str, tuple[Path, ...]], list[ImageRecord]] = {}
        self._image_root: Path | None = None

    # -- the Dataset protocol -------------------------------------------------------------------------

    def available_splits(self) -> list[str]:
        """Split names whose annotation files are present (a listed split may still fail to parse).

        A whole-dataset file is read to see which splits it really holds; an unreadable one keeps its
        splits listed, so that loading them reports the problem.
        """
        return [name for name in self.info.split_names() if name in self._sources and self._may_hold(name)]

    def default_splits(self) -> dict[str, str]:
        """Train and val roles that are disjoint and never the test split; test is the official test.

        The first pair whose files are present wins: official train/val, else the PIR/HarMA re-split,
        else the AMFMN/MCRN verify re-split. With none present, the official names are returned so that
        loading them says which file is missing. (RSITR papers train on ``trainval``, but then no
        validation split is left for model selection; ask for it explicitly.)
        """
        available = set(self._sources)
        train, val = next((pair for pair in SELECTION_PAIRS if set(pair) <= available), SELECTION_PAIRS[0])
        return {"train": train, "val": val, "test": "test"}

    def load_split(self, name: str, *, check_images: bool = True) -> Split:
        """Read, check and resolve one split.

        Arguments:
            check_images: require every image file to exist (or, with ``allow_missing_images``, skip
                and report the missing ones). False reads annotations alone, for ``data stats`` and
                ``data verify`` on folders without images.
        """
        source = self._choose(name)
        try:
            records = self._records(source, name)
        except DataError as exc:
            raise self._with_alternatives(exc, name, source) from None
        self._check_records(records, name)
        root = self._resolve_image_root()
        labels = self._labels(records)
        keep, paths, kept_labels, missing = [], [], [], []
        finder = ImageFinder()
        for record, label in zip(records, labels or [None] * len(records)):
            candidates = candidate_paths(record, self.info, root, label)
            path = finder.find(candidates)
            if path is None and check_images:
                missing.append((record, candidates))
                continue
            keep.append(record)
            kept_labels.append(label)
            paths.append(path or root / record.name)  # unchecked and absent: where the flat layout puts it
        skipped = self._handle_missing(missing, name, len(records), root)
        if not keep:
            raise DataError(f"Split {name!r} of {self.info.title} has zero images left: all {len(records)} "
                            f"image files are missing under {root}. Put the images there or set image_root.")
        captions = [text for record in keep for text in record.captions]
        owners = [i for i, record in enumerate(keep) for _ in record.captions]
        try:
            return Split(dataset=self.info.name, name=name, image_names=[r.name for r in keep], image_paths=paths,
                         captions=captions, caption_image=owners,
                         image_labels=kept_labels if labels is not None else None,
                         annotations={"format": source.format, "files": [str(f) for f in source.all_files()],
                                      "skipped": skipped},
                         source=", ".join(str(f) for f in source.all_files()))
        except ValueError as exc:
            raise DataError(f"{source.describe()}: {exc}. {FORMATS[source.format].description}.") from None

    # -- provenance -----------------------------------------------------------------------------------

    def expected_size(self, name: str) -> tuple[int, int] | None:
        """(images, captions) of the published split, where known; a difference deserves a look."""
        return self.info.sizes.get(name)

    def describe(self) -> dict[str, Any]:
        """Where each split is read from, for a run's provenance record."""
        chosen = {}
        for name in self.available_splits():
            try:
                chosen[name] = self._choose(name).describe()
            except DataError as exc:
                chosen[name] = f"ambiguous: {exc}"
        return {"dataset": self.info.name, "data_root": str(self.root), "format": self.options.format,
                "splits": chosen}

    # -- internals ------------------------------------------------------------------------------------

    def _choose(self, name: str) -> Source:
        candidates = self._sources.get(name)
        if not candidates:
            raise self._missing_split(name)
        best = min(c.rank for c in candidates)
        top = [c for c in candidates if c.rank == best]
        if len(top) > 1:
            listing = "; ".join(c.describe() for c in top)
            raise DataError(f"Several annotation files provide split {name!r} of {self.info.title} equally: "
                            f"{listing}. Keep one, point --data-root at the folder that holds the one you "
                            f"want, or choose a format with --format.")
        return top[0]

    def _may_hold(self, name: str) -> bool:
        try:
            source = self._choose(name)
        except DataError:
            return True
        if source.known_labels is None:
            return True
        try:
            return any(r.split in source.labels for r in self._read(source))
        except DataError:
            return True

    def _read(self, source: Source) -> list[ImageRecord]:
        key = (source.format, source.files)
        if key not in self._records_cache:
            self._records_cache[key] = read_records(source.format, source.files)
        return self._records_cache[key]

    def _records(self, source: Source, name: str) -> list[ImageRecord]:
        if source.parts:
            return [r for part in source.parts for r in self._records(part, name)]
        records = self._read(source)
        if source.known_labels is not None:  # a whole-dataset file: keep this split's records
            for r in records:
                if r.split is None or r.split not in source.known_labels:
                    found = "no 'split'" if r.split is None else f"split {r.split!r}"
                    raise DataError(f"{r.file} ({r.where}): the record has {found}; expected one of "
                                    f"{', '.join(sorted(source.known_labels))}. Fix the record's split or "
                                    f"download the file again.")
            records = [r for r in records if r.split in source.labels]
            if not records:
                raise DataError(f"{source.files[0]}: split {name!r} has zero images (no record has split "
                                f"{' or '.join(sorted(source.labels))}). The file holds other splits only: "
                                f"download the complete file, or read this split from another format.")
        else:  # a per-split file: records that carry a split label must carry the file's
            wrong = [r for r in records if r.split is not None and r.split not in (source.labels or {r.split})]
            if wrong:
                raise DataError(f"{wrong[0].file} ({wrong[0].where}): the record says split {wrong[0].split!r}, "
                                f"but the file name says it holds split {'/'.join(sorted(source.labels))}. "
                                f"Rename the file after the split it holds, or download it again.")
        return records

    def _with_alternatives(self, exc: DataError, name: str, failed: Source) -> DataError:
        """Point at the other files on disk that hold the same split, when the chosen one is broken."""
        others = sorted((s for s in self._sources.get(name, []) if s != failed), key=lambda s: s.rank)
        if not others:
            return exc
        listing = "; ".join(s.describe() for s in others)
        return DataError(f"{exc} Split {name!r} can also be read from: {listing} (choose with --format, or "
                         f"point --data-root at the folder that holds it).")

    def _check_records(self, records: list[ImageRecord], name: str) -> None:
        seen: dict[str, ImageRecord] = {}
        for r in records:
            suffix = PurePosixPath(r.name).suffix.lower()
            if suffix not in self.info.image_extensions:
                raise DataError(f"{r.file} ({r.where}): image {r.name!r} has the extension {suffix or '(none)'!r}, "
                                f"but {self.info.title} images are {'/'.join(self.info.image_extensions)} files. "
                                f"The file probably belongs to another dataset (check --dataset) or was edited: "
                                f"restore the original file names.")
            if r.name in seen:
                first = seen[r.name]
                raise DataError(f"{r.file} ({r.where}): image {r.name!r} of split {name!r} is listed twice (first "
                                f"in {first.file} ({first.where})). Remove the duplicate record.")
            seen[r.name] = r

    def _labels(self, records: list[ImageRecord]) -> list[str] | None:
        if all(r.label for r in records):
            return [r.label for r in records]
        if self.info.label_of is not None:
            derived = [self.info.label_of(r.name) for r in records]
            if all(derived):
                return derived
        return None

    def _resolve_image_root(self) -> Path:
        if self._image_root is None:
            self._image_root = image_root(self.info, self.root, self.options.image_root)
        return self._image_root

    def _handle_missing(self, missing: list, name: str, total: int, root: Path) -> list[dict[str, str]]:
        if not missing:
            return []
        if not self.options.allow_missing_images:
            record, candidates = missing[0]
            more = f" ({len(missing)} of the split's {total} images are missing)" if len(missing) > 1 else ""
            raise DataError(f"{record.file} ({record.where}): the image file {record.name!r} of split {name!r} "
                            f"was not found; looked for {', '.join(str(c) for c in candidates)}{more}. Put the "
                            f"images under {root} (layout: docs/datasets.md), set image_root, or allow "
                            f"missing images (--allow-missing-images; for run: --set "
                            f"dataset.allow_missing_images=true) to skip such records (data stats lists them).")
        return [{"image": record.name, "record": f"{record.file} ({record.where})", "reason": "image file not found"}
                for record, _ in missing]

    def _missing_split(self, name: str) -> DataError:
        known = self.info.split_names()
        if name not in known:
            listing = "; ".join(f"{n} ({SPLIT_MEANINGS[n]})" for n in known)
            return DataError(f"{self.info.title} has no split {name!r}. Its splits: {listing}.")
        patterns = [p for p in self.info.patterns if self._formats is None or p.format in self._formats]
        needs = [f"{f} ({p.format})" for p in patterns for f in p.files_for(name)]
        if name == "trainval":
            needs.append("the train and val files of any format")
        notes = [f"{' + '.join(p.file_names(label))} holds split {target!r}, not {name!r}"
                 for p in patterns for label, target in p.splits.items()
                 if label == name and target != name and not p.whole]
        found = "; ".join(f"{n} from {min(self._sources[n], key=lambda s: s.rank).describe(self.root)}"
                          for n in self.available_splits())
        forced = f" with --format {self.options.format}" if self._formats else ""
        return DataError(
            f"Split {name!r} ({SPLIT_MEANINGS[name]}) of {self.info.title} is not under {self.root}{forced}. "
            f"It is read from {' or '.join(needs) or 'no file of this format'}"
            + (f" (note: {'; '.join(dict.fromkeys(notes))})" if notes else "")
            + f". Found: {found or 'nothing'}. {self.info.download_help()}")

    def _nothing_found(self) -> DataError:
        if self._formats:
            others = find_sources(self.info, self.root)
            formats = sorted({s.format for sources in others.values() for s in sources})
            found = f" Formats found there: {', '.join(formats)}." if formats else ""
            return DataError(f"No {self.options.format} annotation file of {self.info.title} under {self.root} "
                             f"(searched {len(self.info.patterns)} file patterns, {MAX_DEPTH} folders deep).{found} "
                             f"{self.info.download_help()}")
        return DataError(f"No annotation file of {self.info.title} under {self.root} (searched {MAX_DEPTH} "
                         f"folders deep). {self.info.download_help()}")


def _coerce(options: RealDatasetOptions | Mapping[str, Any] | None) -> RealDatasetOptions:
    if options is None:
        return RealDatasetOptions()
    if isinstance(options, RealDatasetOptions):
        return options
    valid = {f.name for f in fields(RealDatasetOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"Unknown dataset option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}.")
    return RealDatasetOptions(**options)


def _factory(info: DatasetInfo):
    def build(root: Path | None, options: RealDatasetOptions | Mapping[str, Any] | None = None) -> RealDataset:
        return RealDataset(info, root, _coerce(options))

    build.__doc__ = f"Build the {info.title} dataset found under ``root``."
    return build


SPECS: list[DatasetSpec] = [
    DatasetSpec(name=info.name, factory=_factory(info), options=RealDatasetOptions,
                description=f"{info.title} (needs --data-root; see docs/datasets.md)")
    for info in CATALOG.values()
]
