"""Published results: the curated table of what papers and re-evaluations print, checked as it is loaded.

Two published tables in our own field print an mR that is not the mean of their six recalls, and readers
copy such numbers into new papers. So every row's mR is recomputed from its recalls, and a row whose printed
mR differs beyond rounding is flagged (⚠) wherever it is shown. Rounding allows at most 0.01: the printed
mR is off by at most 0.005 and the mean of six recalls each rounded to 2 decimals by at most 0.005.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rsitr_bench.errors import UserError

#: |printed mR - mean of the printed recalls| beyond this is more than rounding.
MR_TOLERANCE = 0.01 + 1e-6
FLAG = "⚠"


@dataclass(frozen=True)
class PublishedRow:
    """One published line. ``i2t``/``t2i`` are [R@1, R@5, R@10] in percent, or None where not printed."""

    dataset: str
    method: str
    backbone: str
    setting: str
    sources: tuple[str, ...]
    i2t: tuple[float, ...] | None
    t2i: tuple[float, ...] | None
    mR: float | None
    mR_std: float | None = None
    mR_approx: bool = False
    reproduction: bool = False
    note: str = ""
    match_method: str | None = None
    match_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def recalls(self) -> tuple[float, ...] | None:
        return None if self.i2t is None or self.t2i is None else (*self.i2t, *self.t2i)

    @property
    def mR_recomputed(self) -> float | None:
        """Mean of the six printed recalls (None when the source prints no recalls)."""
        return None if self.recalls is None else sum(self.recalls) / len(self.recalls)

    @property
    def mR_mismatch(self) -> bool:
        """True when the printed mR is not the mean of the printed recalls, beyond rounding."""
        recomputed = self.mR_recomputed
        return recomputed is not None and self.mR is not None and abs(self.mR - recomputed) > MR_TOLERANCE

    def metric(self, key: str) -> float | None:
        """The published value of ``i2t_R@k`` / ``t2i_R@k`` (k in 1, 5, 10) or ``mR``."""
        if key == "mR":
            return self.mR
        direction, _, k = key.partition("_R@")
        values = self.i2t if direction == "i2t" else self.t2i
        index = {"1": 0, "5": 1, "10": 2}.get(k)
        return None if values is None or index is None else values[index]

    def matches(self, method: str, config: Mapping[str, Any]) -> bool:
        """Does a reproduced run (method, flattened config) reproduce this row?"""
        return self.match_method == method and all(config.get(k) == v for k, v in self.match_config.items())

    def to_dict(self) -> dict[str, Any]:
        recomputed = self.mR_recomputed
        return {
            "method": self.method, "backbone": self.backbone, "setting": self.setting,
            "sources": list(self.sources), "i2t": self.i2t and list(self.i2t),
            "t2i": self.t2i and list(self.t2i),
            "mR": self.mR, "mR_std": self.mR_std, "mR_approx": self.mR_approx,
            "mR_recomputed": None if recomputed is None else round(recomputed, 2),
            "mR_mismatch": self.mR_mismatch, "reproduction": self.reproduction, "note": self.note,
        }


@dataclass(frozen=True)
class PublishedDataset:
    """The published rows of one dataset and the test split they were measured on."""

    name: str
    images: int
    captions: int
    rows: tuple[PublishedRow, ...]


@dataclass(frozen=True)
class PublishedTable:
    sources: Mapping[str, str]
    datasets: Mapping[str, PublishedDataset]


def _triple(value: Any, where: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(_is_number(v) for v in value):
        raise UserError(f"{where}: recalls must be a list [R@1, R@5, R@10] of numbers or null, "
                        f"got {value!r}.")
    return tuple(float(v) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row(dataset: str, index: int, raw: Mapping[str, Any], source: str) -> PublishedRow:
    where = f"{source}: datasets.{dataset}.rows[{index}]"
    if not isinstance(raw, Mapping) or not raw.get("method"):
        raise UserError(f"{where} must be a mapping with at least 'method', got {raw!r}.")
    sources = raw.get("source") or []
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise UserError(f"{where} ({raw['method']}) names no source; every published number needs one.")
    mr = raw.get("mR")
    if mr is not None and not _is_number(mr):
        raise UserError(f"{where}: mR must be a number or null, got {mr!r}.")
    match = raw.get("match") or {}
    return PublishedRow(
        dataset=dataset, method=str(raw["method"]), backbone=str(raw.get("backbone", "n/s")),
        setting=str(raw.get("setting", "")), sources=tuple(map(str, sources)),
        i2t=_triple(raw.get("i2t"), where), t2i=_triple(raw.get("t2i"), where),
        mR=None if mr is None else float(mr), mR_std=raw.get("mR_std"), mR_approx=bool(raw.get("mR_approx")),
        reproduction=bool(raw.get("reproduction")), note=str(raw.get("note", "")),
        match_method=match.get("method"), match_config=dict(match.get("config") or {}),
    )


def load_published(path: Path | None = None) -> PublishedTable:
    """Load the curated table (the packaged ``published.yaml`` unless ``path`` names another file)."""
    if path is None:
        text = resources.files("rsitr_bench.reports").joinpath("published.yaml").read_text(encoding="utf-8")
        source = "published.yaml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"Cannot read the published-results file {path}: "
                            f"{exc.strerror or exc}.") from None
        source = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"The published-results file {source} is not valid YAML: {exc}.") from None
    datasets = {}
    for name, entry in (data.get("datasets") or {}).items():
        split = entry.get("test_split") or {}
        rows = tuple(_row(name, i, raw, source) for i, raw in enumerate(entry.get("rows") or []))
        datasets[name] = PublishedDataset(name, int(split.get("images", 0)), int(split.get("captions", 0)),
                                          rows)
    return PublishedTable(sources=dict(data.get("sources") or {}), datasets=datasets)
