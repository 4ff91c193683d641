"""The typed run configuration.

A run is configured in layers: built-in defaults, then a YAML file (``--config``), then CLI flags, then dotted
overrides (``--set train.lr=4e-5``). The fixed sections (``run``, ``data``, ``eval``) are declared here; the
``method``, ``dataset`` and ``train`` sections are declared by the chosen plugins through their options
dataclasses, and a preset (``mps-clip-head``) layers its declared ``defaults`` under the user's values. Every key
is checked by :mod:`rsitr_bench.harness.options`: an unknown key names itself and lists the valid ones, and a
value of the wrong type or out of its declared range names the key and what is allowed. The resolved
configuration is saved with every run, and ``--resume`` rebuilds a run from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from rsitr_bench.errors import ConfigError
from rsitr_bench.harness.defaults import DEFAULT_DATASET
from rsitr_bench.harness.options import build_section


@dataclass
class RunSection:
    """How to run: seeds, device, progress bars, per-query sample logs (none changes what is measured)."""

    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    progress: bool = True
    log_samples: bool = False  # seeds/<seed>/samples.jsonl: top-10 and first-positive rank of every query


@dataclass
class DataSection:
    """Which data, and how captions are normalised (a declared part of every result)."""

    root: str | None = None
    normalization: Literal["none", "lower", "pre_caption"] = "none"
    prompt_prefix: str = ""
    train_split: str | None = None
    val_split: str | None = None
    test_split: str | None = None


@dataclass
class EvalSection:
    """How retrieval is scored. Every field is stamped into the result."""

    ks: list[Annotated[int, Field(ge=1)]] = field(default_factory=lambda: [1, 5, 10])
    protocol: Literal["instance", "string-dedup", "fixed-5"] = "instance"
    ties: Literal["optimistic", "pessimistic", "expected"] = "optimistic"
    bootstrap: Annotated[int, Field(ge=0)] = 1000  # resamples of the confidence intervals; 0: none
    # Score only the first N images of the scored split and their captions (a smoke test): the result is
    # stamped non-comparable and never ranked. None: the whole split.
    limit: Annotated[int, Field(ge=1)] | None = None


FIXED_SECTIONS: dict[str, type] = {"run": RunSection, "data": DataSection, "eval": EvalSection}


@dataclass
class RunConfig:
    """A fully resolved run configuration."""

    method: str
    dataset: str
    method_options: Any
    dataset_options: Any
    train: Any | None
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": {"name": self.method, **_asdict(self.method_options)},
            "dataset": {"name": self.dataset, **_asdict(self.dataset_options)},
        }
        if self.train is not None:
            out["train"] = _asdict(self.train)
        for name in FIXED_SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj) if obj is not None else {}


def load_yaml_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a nested mapping, with errors that name the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror or exc}. Check the path given to "
                          f"--config.") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
                          f"Fix the syntax there.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (run, data, eval, method, "
                          f"dataset, train), not a {type(data).__name__}.")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value), reading the value as YAML (``4``, ``true``, ``[0, 1]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {text!r} is not of the form section.key=value (e.g. train.lr=4e-5).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def assemble_tree(config_file: Path | None, flags: list[tuple[Any, list[str]]], overrides: list[str]
                  ) -> dict[str, Any]:
    """Layer a configuration mapping: the YAML file, then CLI flags ``(value, path)``, then ``--set`` texts.

    Flags whose value is None were not given and change nothing. ``method: NAME`` shorthand in the file
    becomes ``{"name": NAME}`` so flags can add options beside it.
    """
    tree: dict[str, Any] = load_yaml_file(config_file) if config_file else {}
    for section in ("method", "dataset"):
        if isinstance(tree.get(section), str):
            tree[section] = {"name": tree[section]}
    for value, path in flags:
        if value is not None:
            apply_override(tree, path, value)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    return tree


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Cannot set {'.'.join(path)}: {part!r} is a value, not a section.")
        node = child
    node[path[-1]] = value


def split_named_section(tree: dict[str, Any], section: str) -> tuple[str | None, dict[str, Any]]:
    """Split ``{"name": x, **options}`` into (x, options); a bare string is just the name."""
    raw = tree.get(section)
    if raw is None:
        return None, {}
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Section {section!r} must be a mapping with a 'name' key, got {raw!r}.")
    options = dict(raw)
    name = options.pop("name", None)
    return name, options


KNOWN_SECTIONS = ("method", "dataset", "train", *FIXED_SECTIONS)


def check_sections(tree: dict[str, Any]) -> None:
    unknown = [k for k in tree if k not in KNOWN_SECTIONS]
    if unknown:
        raise ConfigError(f"Unknown section {unknown[0]!r}. Valid sections: {', '.join(KNOWN_SECTIONS)}.")


@dataclass
class NoOptions:
    """Options of a plugin that declares none."""




def resolve_config(tree: dict[str, Any], host: Any) -> RunConfig:
    """Turn a merged configuration mapping into a typed :class:`RunConfig`, using the plugins' declarations."""
    check_sections(tree)
    method, method_values = split_named_section(tree, "method")
    if not method:
        raise ConfigError(f"No method given. Pass --method NAME; known methods: {', '.join(host.names('methods'))}.")
    dataset, dataset_values = split_named_section(tree, "dataset")
    dataset = dataset or DEFAULT_DATASET
    method_spec = host.get("methods", method).spec
    dataset_spec = host.get("datasets", dataset).spec
    train_cls = method_spec.train_options
    if tree.get("train") and train_cls is None:
        raise ConfigError(f"Method {method!r} is not trainable, so it takes no train.* options "
                          f"(got {', '.join(sorted(tree['train']))}).")
    preset = method_spec.defaults
    return RunConfig(
        method=method,
        dataset=dataset,
        method_options=build_section(method_spec.options or NoOptions, method_values, "method", preset.get("method")),
        dataset_options=build_section(dataset_spec.options or NoOptions, dataset_values, "dataset"),
        train=build_section(train_cls, tree.get("train"), "train", preset.get("train")) if train_cls else None,
        **{name: build_section(cls, tree.get(name), name) for name, cls in FIXED_SECTIONS.items()},
    )
