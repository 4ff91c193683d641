"""Evaluation without training: a configured method on its test split, a named evaluation preset, or a grid.

Why a separate path: scoring a released checkpoint must not train, must not need the training data, and must
still land in the registry as an ordinary run that reports can rank next to trained ones. Everything here
builds run configurations and hands them to :func:`rsitr_bench.harness.runner.execute` with ``fit=False``; no metric
or scoring logic lives here.

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
    """A finished row: its label, the recorded run and the published number it is compared with."""

    label: str
    outcome: RunOutcome
    published_mr: float | None = None


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

    ``model`` is a catalog name (``remoteclip-vit-b-32``), an open_clip hub model (``hf-hub:OWNER/REPO``) or an
    open_clip ``MODEL/TAG`` pair (``ViT-B-32/openai``, ``rsitr-tiny/synthetic-rs``).
    """
    from rsitr_bench.checkpoints import get_entry, is_catalog_name

    if model.startswith("hf-hub:"):
        return {"method.model": model, "method.pretrained": None, "method.checkpoint": None}
    if "/" in model and not is_catalog_name(model):
        arch, tag = model.split("/", 1)
        return {"method.model": arch, "method.pretrained": tag, "method.checkpoint": None}
    entry = get_entry(model)  # an unknown name is an error that lists the catalog
    return {"method.model": entry.architecture.model, "method.pretrained": None, "method.checkpoint": model}


def run_grid(models: Sequence[str], datasets: Sequence[str], host: PluginHost, registry: Registry,
             base: dict[str, Any], data_dir: Path | None = None, method: str = "global-clip") -> list[EvalResult]:
    """Score ``method`` with every model on every dataset (zero-shot), one recorded run per cell.

    Arguments:
        data_dir: a folder holding one sub-folder per dataset (``DIR/rsitmd``, ``DIR/ucm``, ...); None uses
            each dataset's default data package folder, fetched when missing (a dataset without a package,
            such as the embedded ``synthetic-rs``, gets no data root).
    """
    if not models or not datasets:
        raise UserError("A grid needs at least one model and one dataset, e.g. --models "
                        "remoteclip-vit-b-32,ViT-B-32/openai --datasets rsitmd,ucm.")
    overrides = {m: grid_overrides(m) for m in models}  # unknown names fail before any run starts
    roots = {d: _grid_root(d, data_dir) for d in datasets}
    results = []
    for dataset in datasets:
        for model in models:
            tree = _with_overrides(base, {"method.name": method, "dataset.name": dataset,
                                          "data.root": roots[dataset], **overrides[model]})
            outcome = evaluate_tree(tree, host, registry, tags={"grid_model": model})
            results.append(EvalResult(f"{model} on {dataset}", outcome))
    return results


def _grid_root(dataset: str, data_dir: Path | None) -> str | None:
    if data_dir is not None:
        return str(Path(data_dir).expanduser() / dataset)
    from rsitr_bench.data.packages import load_catalog

    catalog = load_catalog()
    if not any(p.dataset == dataset for p in catalog.packages.values()):
        return None
    return str(ensure_data(catalog.resolve(dataset).name, None))
