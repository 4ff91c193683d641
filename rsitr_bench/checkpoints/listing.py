"""Rows for ``rsitr-bench list pretrained`` and ``list models``: every weights name a run can be given.

Three sources, one table, so a user never has to know which registry a name lives in: the catalog, the
installed open_clip's ``list_pretrained()`` tags, and rsitr-bench's embedded ``rsitr-tiny`` weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import open_clip

from rsitr_bench.checkpoints.catalog import CatalogEntry, load_catalog
from rsitr_bench.clip.backbones import EMBEDDED_TAG, EMBEDDED_WEIGHTS, register_model_configs

#: Methods that build a plain open_clip backbone from `method.model` + `method.pretrained` / `method.checkpoint`.
BACKBONE_METHODS = "global-clip, full-ft"
EMBEDDED_MODEL = "rsitr-tiny"


@dataclass(frozen=True)
class PretrainedRow:
    """One weights name, as listed: ``used_for`` names the methods it is meant for."""

    name: str
    architecture: str
    source: str
    verified: str
    size: str
    licence: str
    used_for: str


@dataclass(frozen=True)
class ModelRow:
    """One architecture: the open_clip tags and catalog checkpoints that fit it."""

    model: str
    open_clip_tags: str
    catalog: str


def _architecture(model: str, quick_gelu: bool) -> str:
    return f"{model} (quick_gelu)" if quick_gelu else model


def _size(megabytes: float | None) -> str:
    if megabytes is None:
        return "unknown"
    return f"{megabytes / 1000:.2f} GB" if megabytes >= 1000 else f"{megabytes:.0f} MB"


def _catalog_row(entry: CatalogEntry) -> PretrainedRow:
    used_for = ", ".join(entry.methods)
    if entry.variant:
        used_for += f" ({entry.layout}, {entry.variant})"
    return PretrainedRow(entry.name, _architecture(entry.architecture.model, entry.architecture.quick_gelu),
                         entry.source, "yes" if entry.verified else "no", _size(entry.size_mb), entry.licence,
                         used_for)


def _embedded_row() -> PretrainedRow:
    weights = EMBEDDED_WEIGHTS / f"{EMBEDDED_MODEL}-{EMBEDDED_TAG}.safetensors"
    return PretrainedRow(f"{EMBEDDED_MODEL}/{EMBEDDED_TAG}", EMBEDDED_MODEL, "embedded (ships with rsitr-bench)",
                         "yes", _size(weights.stat().st_size / 1e6), "Apache-2.0 (rsitr-bench)",
                         "every method (the default backbone)")


def _open_clip_rows() -> list[PretrainedRow]:
    rows = []
    for model, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(model, tag)
        rows.append(PretrainedRow(f"{model}/{tag}", _architecture(model, bool(cfg.get("quick_gelu"))),
                                  f"open_clip:{model}/{tag}", "-", "", "see the open_clip model card",
                                  BACKBONE_METHODS))
    return rows


def pretrained_rows() -> list[PretrainedRow]:
    """Catalog entries first, then the embedded weights, then every open_clip tag."""
    return [*map(_catalog_row, load_catalog().values()), _embedded_row(), *_open_clip_rows()]


def model_rows() -> list[ModelRow]:
    """Every open_clip model config (rsitr-bench's own included) with the weights names that fit it."""
    register_model_configs()
    tags: dict[str, list[str]] = {}
    for model, tag in open_clip.list_pretrained():
        tags.setdefault(model, []).append(tag)
    tags.setdefault(EMBEDDED_MODEL, []).append(EMBEDDED_TAG)
    catalog: dict[str, list[str]] = {}
    for entry in load_catalog().values():
        catalog.setdefault(entry.architecture.model, []).append(entry.name)
    return [ModelRow(model, ", ".join(tags.get(model, [])), ", ".join(catalog.get(model, [])))
            for model in open_clip.list_models()]
