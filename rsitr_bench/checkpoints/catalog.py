"""The catalog of known checkpoints: typed entries, lookup by name, and fetching with a pinned digest.

Why a catalog: published remote-sensing CLIP weights live in ad-hoc hub repos with no shared naming, some are
pickles of unknown provenance, and their cards disagree with the code about how to load them (activation,
adapter variant). Naming each release once, with its source, expected sha256, architecture and the card's
own numbers, lets a run say ``--set method.checkpoint=remoteclip-vit-b-32`` and get exactly those bytes,
and lets a reader see which of those facts were confirmed (``verified`` / ``note``).

The data is ``catalog.yaml`` beside this module; it is validated in full at load, so a malformed entry is a
:class:`CatalogError` naming the entry and the field rather than a failure deep inside a run.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from rsitr_bench.errors import UserError
from rsitr_bench.harness import hub

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
#: The one catalog format this code reads; a file declaring another is refused rather than half-understood.
CATALOG_VERSION = 1
#: Published numbers are rounded to 2 decimals, so their mean may differ from the stated mR by this much.
_MEAN_RECALL_TOLERANCE = 0.011

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_OPEN_CLIP = re.compile(r"^open_clip:(?P<model>[^/\s]+)/(?P<tag>[^/\s]+)$")
_HF_HUB = re.compile(rf"^hf-hub:(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[^@/\s]+))?$")
_HF_FILE = re.compile(rf"^hf://(?P<repo>{_NAME}/{_NAME})/(?P<path>[^@\s]+)@(?P<rev>[^@/\s]+)$")


class CatalogError(UserError):
    """The checkpoint catalog file is unreadable or does not match its schema."""


class UnknownCheckpointError(UserError):
    """A checkpoint name (or NAME@VERSION) that the catalog does not hold."""

    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        close = difflib.get_close_matches(name.split("@")[0], known, n=3, cutoff=0.5)
        ordered = close + [k for k in known if k not in close]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(
            f"Unknown checkpoint {name!r}.{hint} Known checkpoints: {', '.join(ordered)}. "
            f"Run `rsitr-bench list pretrained` to see each one's architecture, source and licence.")


class CheckpointVersionError(UserError):
    """``NAME@VERSION`` where the catalog's entry has moved on: the pinned weights are no longer what NAME means."""


@dataclass(frozen=True)
class SourceRef:
    """A parsed ``source``: which fetcher it goes through and with which coordinates."""

    kind: Literal["open_clip", "hf-hub", "hf-file"]
    repo_id: str | None = None
    path: str | None = None
    revision: str | None = None
    model: str | None = None
    tag: str | None = None


def parse_source(source: str) -> SourceRef:
    """Parse a catalog ``source`` string; anything but the three documented forms is a ``ValueError``."""
    if match := _OPEN_CLIP.match(source):
        return SourceRef("open_clip", model=match["model"], tag=match["tag"])
    if match := _HF_HUB.match(source):
        return SourceRef("hf-hub", repo_id=match["repo"], revision=match["rev"])
    if match := _HF_FILE.match(source):
        return SourceRef("hf-file", repo_id=match["repo"], path=match["path"], revision=match["rev"])
    raise ValueError("expected open_clip:MODEL/TAG, hf-hub:OWNER/REPO[@REVISION] or hf://OWNER/REPO/PATH@REVISION")


class _Record(BaseModel):
    """Unknown keys are errors; flags and numbers take no string or bool look-alikes ("yes", true as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Record):
    """The open_clip model the weights fit: its config name and whether it needs QuickGELU."""

    model: str = Field(min_length=1)
    quick_gelu: StrictBool


class PublishedResult(_Record):
    """Recall the card states, in percent: ``i2t`` / ``t2i`` are R@1, R@5, R@10; ``mean_recall`` their mean."""

    dataset: str = Field(min_length=1)
    i2t: tuple[StrictFloat, StrictFloat, StrictFloat]
    t2i: tuple[StrictFloat, StrictFloat, StrictFloat]
    mean_recall: StrictFloat
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _mean_matches(self) -> PublishedResult:
        mean = sum(self.i2t + self.t2i) / 6
        if abs(mean - self.mean_recall) > _MEAN_RECALL_TOLERANCE:
            raise ValueError(f"mean_recall {self.mean_recall} is not the mean of the six recalls ({mean:.3f})")
        return self


class EvaluationPreset(_Record):
    """How to evaluate a released fine-tuned checkpoint: dataset, data package and method preset."""

    dataset: str = Field(min_length=1)
    data_package: str = Field(min_length=1)
    method: str = Field(min_length=1)


class CatalogEntry(_Record):
    """One named, versioned checkpoint (see the header of ``catalog.yaml`` for each field's meaning)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(min_length=1, pattern=r"^[^@\s]+$")
    title: str = Field(min_length=1)
    source: str
    file: str = Field(min_length=1)
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    size_mb: StrictFloat | None = Field(gt=0)
    architecture: Architecture
    layout: Literal["open_clip", "mps-clip-reference"]
    variant: Literal["parallel", "serial"] | None
    methods: list[str] = Field(min_length=1)
    fine_tuned_on: list[str]
    licence: str = Field(min_length=1)
    model_card: str = Field(pattern=r"^https://\S+$")
    published: list[PublishedResult]
    evaluate_on: EvaluationPreset | None
    verified: StrictBool
    note: str = Field(min_length=1)

    @field_validator("source")
    @classmethod
    def _parsable(cls, value: str) -> str:
        parse_source(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CatalogEntry:
        ref = self.source_ref
        if ref.kind == "open_clip" and ref.model != self.architecture.model:
            raise ValueError(f"source names open_clip model {ref.model!r} but architecture.model is "
                             f"{self.architecture.model!r}")
        if ref.kind == "hf-file" and ref.path != self.file:
            raise ValueError(f"file {self.file!r} differs from the path {ref.path!r} in source")
        if self.layout == "mps-clip-reference":
            if self.variant is None:
                raise ValueError("a mps-clip-reference checkpoint must name its adapter variant")
            if self.evaluate_on is None:
                raise ValueError("a mps-clip-reference checkpoint must say what to evaluate it on (evaluate_on)")
        elif self.variant is not None:
            raise ValueError("variant applies to mps-clip-reference checkpoints only; use null")
        return self

    @property
    def source_ref(self) -> SourceRef:
        return parse_source(self.source)

    @property
    def pinned(self) -> str:
        """``NAME@VERSION``: the spelling that keeps meaning these exact weights if the catalog changes."""
        return f"{self.name}@{self.version}"


class _CatalogFile(_Record):
    catalog_version: int
    checkpoints: list[CatalogEntry]


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """Every entry of the catalog at ``path`` (default: the shipped one), by name, in file order."""
    return dict(_load(Path(path) if path is not None else CATALOG_PATH))


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> tuple[tuple[str, CatalogEntry], ...]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"Cannot read the checkpoint catalog {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"The checkpoint catalog {path} is not valid YAML: {exc}. Fix the file.") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"The checkpoint catalog {path} must be a mapping with catalog_version and "
                           f"checkpoints; fix the file.")
    if raw.get("catalog_version") != CATALOG_VERSION:
        raise CatalogError(f"The checkpoint catalog {path} declares catalog_version "
                           f"{raw.get('catalog_version')!r}; this rsitr-bench reads version {CATALOG_VERSION}.")
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_describe(path, raw, exc)) from None
    entries: dict[str, CatalogEntry] = {}
    for entry in parsed.checkpoints:
        if entry.name in entries:
            raise CatalogError(f"The checkpoint catalog {path} lists {entry.name!r} twice; names must be unique "
                               f"(give a new release a new name, or bump `version` of the existing entry).")
        entries[entry.name] = entry
    return tuple(entries.items())


def _describe(path: Path, raw: dict, exc: ValidationError) -> str:
    """Turn pydantic's errors into sentences naming the entry (by name when it has one) and the field."""
    items = raw.get("checkpoints")
    problems = []
    for error in exc.errors()[:5]:
        loc = list(error["loc"])
        where = ".".join(str(part) for part in loc) or "(top level)"
        if len(loc) >= 2 and loc[0] == "checkpoints" and isinstance(loc[1], int):
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            label = repr(item.get("name")) if isinstance(item, dict) and item.get("name") else f"#{loc[1] + 1}"
            field = ".".join(str(part) for part in loc[2:]) or "(the entry itself)"
            where = f"entry {label}, field {field}"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return (f"The checkpoint catalog {path} does not match its schema: " + "; ".join(problems) + more
            + ". Fix the file (field meanings are in the header of rsitr_bench/checkpoints/catalog.yaml).")


def get_entry(name: str, catalog: dict[str, CatalogEntry] | None = None) -> CatalogEntry:
    """The entry called ``name``, or ``NAME@VERSION`` checked against the entry's version."""
    catalog = load_catalog() if catalog is None else catalog
    base, _, version = name.partition("@")
    entry = catalog.get(base)
    if entry is None:
        raise UnknownCheckpointError(name, list(catalog))
    if version and version != entry.version:
        raise CheckpointVersionError(
            f"Checkpoint {name!r} is pinned to version {version}, but the catalog holds {base} version "
            f"{entry.version} ({entry.source}). Check what changed (`rsitr-bench list pretrained`) and update the "
            f"pin to {entry.pinned}.")
    return entry


def is_catalog_name(value: str | None, catalog: dict[str, CatalogEntry] | None = None) -> bool:
    """Whether a ``method.checkpoint`` / ``method.pretrained`` value names a catalog entry (``NAME[@VERSION]``).

    Only the name part decides, so a wrong ``@VERSION`` is still routed to the catalog and reported by
    :func:`get_entry` instead of being mistaken for a file path or an open_clip tag.
    """
    if not value:
        return False
    catalog = load_catalog() if catalog is None else catalog
    return value.partition("@")[0] in catalog


def resolve_checkpoint(entry: CatalogEntry) -> hub.FetchedFile:
    """The entry's weights file on this machine, fetched if needed and checked against its sha256."""
    ref = entry.source_ref
    what = f"{entry.title} ({entry.pinned})"
    if ref.kind == "hf-file":
        return hub.fetch(entry.source, sha256=entry.sha256, what=what)
    if ref.kind == "hf-hub":
        return hub.fetch_hf_file(ref.repo_id, entry.file, revision=ref.revision, sha256=entry.sha256, what=what)
    return hub.fetch_hf_file(_open_clip_repo(entry), entry.file, sha256=entry.sha256, what=what)


def _open_clip_repo(entry: CatalogEntry) -> str:
    """The hub repo the installed open_clip downloads a tag from: open_clip, not the catalog, owns that map."""
    import open_clip

    ref = entry.source_ref
    hub_id = (open_clip.get_pretrained_cfg(ref.model, ref.tag) or {}).get("hf_hub", "")
    if not hub_id:
        raise CatalogError(f"Checkpoint {entry.name!r}: the installed open_clip has no hub repo for "
                           f"{ref.model}/{ref.tag}; upgrade open_clip_torch or pass a local file as "
                           f"method.checkpoint.")
    return hub_id.strip("/")


def resolve_backbone(name: str, model_name: str) -> tuple[hub.FetchedFile, bool]:
    """Weights and QuickGELU flag for building open_clip ``model_name`` from the catalog entry ``name``.

    Refuses an entry of another architecture or layout up front, because loading it would only fail later
    with a wall of mismatched keys (or, for a compatible shape, silently use the wrong activation).
    """
    entry = get_entry(name)
    if entry.layout != "open_clip":
        methods = ", ".join(entry.methods)
        raise UserError(f"Checkpoint {name!r} holds a whole MPS-CLIP model in the reference layout "
                        f"({entry.variant} adapters), not a CLIP backbone. Use it with --method {methods} and "
                        f"--set method.checkpoint={entry.name}.")
    if entry.architecture.model != model_name:
        raise UserError(f"Checkpoint {name!r} is for open_clip model {entry.architecture.model}, but "
                        f"method.model is {model_name}. Add --set method.model={entry.architecture.model}.")
    return resolve_checkpoint(entry), entry.architecture.quick_gelu
