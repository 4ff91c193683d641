"""Evaluation without training: a configured method on its test split, a named evaluation preset, or a grid.

Why a separate path: scoring a released checkpoint must not train, must not need the training data, and must
still land in the registry as an ordinary run that reports can rank next to trained ones. Everything here
builds run configurations and hands them to :func:`rsitr_bench.harness.runner.execute` with ``fit=False``; no metric
or scoring logic lives here. The model × dataset grid (:func:`run_grid`) is shared with ``run``, which trains
every cell (``fit=True``).

Evaluation presets (``eval_presets.yaml``, data rather than code) name a catalog checkpoint, the dataset and
data package it belongs to, the published number, and the rows to score. ``mps-clip-released-rsitmd`` scores
the released RSITMD weights twice: once as published (gallery sub-images segmented from each test image's own
captions: leaky, stamped non-compliant) and once leak-free, so the two numbers sit side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rsitr_bench.errors import ConfigError, UserError
from rsitr_bench.harness.config import apply_override, resolve_config
from rsitr_bench.harness.paths import home_dir
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.runner import RunOutcome, execute


@dataclass(frozen=True)
class EvalRow:
    """One scored configuration of a preset: a label for the table, a method and its dotted overrides."""

    label: str
    method: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalPreset:
    """A named evaluation: which weights, on which data, scored which ways, against which published mR."""

    name: str
    description: str
    checkpoint: str
    dataset: str
    data_package: str
    published_mr: float | None
    rows: tuple[EvalRow, ...]


@dataclass(frozen=True)
class EvalResult:
    """A finished row or grid cell: its label, the recorded run and the published number it is compared with."""

    label: str
    outcome: RunOutcome
    published_mr: float | None = None
    model: str | None = None  # the grid entry, for a grid cell


def data_home() -> Path:
    """Where fetched datasets go by default: ``$RSITR_BENCH_HOME/data/<package>``."""
    return home_dir() / "data"


def load_eval_presets(path: Path | None = None) -> dict[str, EvalPreset]:
    """Read the evaluation presets shipped with rsitr-bench (or ``path``), checking every field."""
    shipped = resources.files("rsitr_bench.harness").joinpath("eval_presets.yaml")
    text = path.read_text() if path else shipped.read_text()
    where = str(path) if path else "rsitr_bench/harness/eval_presets.yaml"
    raw = yaml.safe_load(text) or {}
    presets = {}
    for name, entry in raw.items():
        try:
            rows = tuple(EvalRow(r["label"], r["method"], dict(r.get("set") or {})) for r in entry["rows"])
            presets[name] = EvalPreset(name, entry["description"], entry["checkpoint"], entry["dataset"],
                                       entry["data_package"], entry.get("published_mR"), rows)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"Evaluation preset {name!r} in {where} is malformed ({type(exc).__name__}: {exc}); "
                              f"each preset needs description, checkpoint, dataset, data_package and rows of "
                              f"{{label, method, set}}.") from None
    return presets


def get_eval_preset(name: str) -> EvalPreset:
    presets = load_eval_presets()
    if name not in presets:
        raise UserError(f"Unknown evaluation preset {name!r}. Known presets: {', '.join(sorted(presets))}.")
    return presets[name]


def ensure_data(package: str, data_root: Path | None) -> Path:
    """The data root of ``package``: ``data_root`` if given, else its default folder, fetched when missing.

    A given ``data_root`` is used as is (the dataset plugin reports what is missing in it); only the default
    folder is filled on demand, so nothing is ever written into a folder the user named for reading.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    target = data_home() / package
    if not target.is_dir():
        from rsitr_bench.data.fetch import fetch_dataset

        fetch_dataset(package, target)
    return target


def evaluate_tree(tree: dict[str, Any], host: PluginHost, registry: Registry,
                  tags: dict[str, Any] | None = None) -> RunOutcome:
    """Score the run configuration ``tree`` on its test split without training, and record it."""
    return execute(resolve_config(tree, host), host, registry, tags=tags, fit=False)


def _with_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    tree = yaml.safe_load(yaml.safe_dump(base))  # a deep copy that keeps only plain data
    for key, value in overrides.items():
        apply_override(tree, key.split("."), value)
    return tree


def run_eval_preset(name: str, host: PluginHost, registry: Registry, data_root: Path | None = None,
                    base: dict[str, Any] | None = None) -> list[EvalResult]:
    """Score every row of preset ``name`` on its dataset; each row becomes one recorded run."""
    preset = get_eval_preset(name)
    root = ensure_data(preset.data_package, data_root)
    results = []
    for row in preset.rows:
        tree = _with_overrides(base or {}, {"method.name": row.method, "method.checkpoint": preset.checkpoint,
                                            "dataset.name": preset.dataset, "data.root": str(root),
                                            **row.overrides})
        outcome = evaluate_tree(tree, host, registry, tags={"eval_preset": name, "row": row.label})
        results.append(EvalResult(row.label, outcome, preset.published_mr))
    return results


def grid_overrides(model: str) -> dict[str, Any]:
    """The backbone options of one grid entry.

    ``model`` is a catalog name (``remoteclip-vit-b-32``), an open_clip hub model (``hf-hub:OWNER/REPO``), an
    open_clip ``MODEL/TAG`` pair (``ViT-B-32/openai``, ``rsitr-tiny/synthetic-rs``), or a bare open_clip
    model (``RN50``, ``rsitr-tiny``) whose weights the configuration's ``method.pretrained`` names. Only the
    first three set ``method.pretrained``. An unknown name is a :class:`UserError` that lists the catalog.
    """
    from rsitr_bench.checkpoints import get_entry, is_catalog_name, load_catalog

    if model.startswith("hf-hub:"):
        return {"method.model": model, "method.pretrained": None, "method.checkpoint": None}
    if is_catalog_name(model):
        entry = get_entry(model)
        return {"method.model": entry.architecture.model, "method.pretrained": None, "method.checkpoint": model}
    if "/" in model:
        arch, tag = model.split("/", 1)
        return {"method.model": arch, "method.pretrained": tag, "method.checkpoint": None}
    if _is_open_clip_model(model):
        return {"method.model": model}
    raise UserError(f"Unknown model {model!r}: neither a checkpoint catalog name ({', '.join(load_catalog())}), "
                    f"nor an open_clip model (`rsitr-bench list models`), nor MODEL/TAG (ViT-B-32/openai) or "
                    f"hf-hub:OWNER/REPO.")


def _is_open_clip_model(name: str) -> bool:
    import open_clip

    from rsitr_bench.clip.backbones import register_model_configs

    register_model_configs()
    return name in open_clip.list_models()


def run_grid(models: Sequence[str] | None, datasets: Sequence[str] | None, host: PluginHost, registry: Registry,
             base: dict[str, Any], data_dir: Path | None = None, method: str | None = None,
             fit: bool = False) -> list[EvalResult]:
    """Run ``method`` with every model on every dataset, one recorded run per cell, datasets outermost.

    ``eval`` and ``leaderboard`` score each cell as configured (``fit=False``); ``run`` trains it first
    (``fit=True``), so a training grid obeys every rule of a single run.

    Arguments:
        models: grid entries (see :func:`grid_overrides`); None keeps the base configuration's backbone.
        datasets: dataset names; None keeps the base configuration's dataset and data root.
        method: the method of every cell; None keeps the base configuration's.
        data_dir: a folder holding one sub-folder per dataset (``DIR/rsitmd``, ``DIR/ucm``, ...); None uses
            each dataset's default data package folder, fetched when missing (a dataset without a package,
            such as the embedded ``synthetic-rs``, gets no data root).
    """
    if models is not None and not models or datasets is not None and not datasets:
        raise UserError("A grid needs at least one model and one dataset, e.g. --models "
                        "remoteclip-vit-b-32,ViT-B-32/openai --datasets rsitmd,ucm.")
    overrides = {m: grid_overrides(m) for m in models or ()}  # unknown names fail before any run starts
    roots = {d: _grid_root(d, data_dir) for d in datasets or ()}
    results = []
    for dataset in datasets or [None]:
        for model in models or [None]:
            cell = {"method.name": method} if method else {}
            if dataset is not None:
                cell |= {"dataset.name": dataset, "data.root": roots[dataset]}
            tree = _with_overrides(base, {**cell, **overrides.get(model, {})})
            tags = {"grid_model": model} if model is not None else None
            outcome = execute(resolve_config(tree, host), host, registry, tags=tags, fit=fit)
            label = " on ".join(x for x in (model, dataset) if x is not None) or outcome.metrics["dataset"]
            results.append(EvalResult(label, outcome, model=model))
    return results


def _grid_root(dataset: str, data_dir: Path | None) -> str | None:
    if data_dir is not None:
        return str(Path(data_dir).expanduser() / dataset)
    from rsitr_bench.data.packages import load_catalog

    catalog = load_catalog()
    if not any(p.dataset == dataset for p in catalog.packages.values()):
        return None
    return str(ensure_data(catalog.resolve(dataset).name, None))
