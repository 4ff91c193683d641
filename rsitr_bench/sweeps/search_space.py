"""Sweep search spaces: declared by each method, narrowed or extended by the user, checked before any trial.

A search space maps dotted configuration keys to parameter specs::

    {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
     "method.bottleneck": {"type": "int", "low": 32, "high": 256, "step": 32},
     "method.k": {"type": "categorical", "choices": [1, 2, 4]}}

The method declares it in ``MethodSpec.search_space``. A user file (``--search-space FILE``) holds the same
mapping and is merged key by key: a full spec replaces or adds a parameter, a partial one (``{"high": 1e-4}``)
narrows the declared spec, and ``null`` drops the parameter. Every problem (empty range, unknown type, a key
that the configuration does not accept) is reported before the first trial, because a sweep that fails after
an hour of training on trial 7 wastes the cluster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rsitr_bench.errors import UserError

TYPES = ("float", "int", "categorical")
_FIELDS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter: a numeric range (``float``/``int``) or a list of ``choices``."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial (its name in the study is the dotted key)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        """The extreme values of the range (or every choice): what the start-up check resolves."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def _number(value: Any, key: str, name: str, source: str) -> float | int:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"Search space ({source}): {key}.{name} must be a finite number, got {value!r}.")
    return value


def parse_param(key: str, raw: Mapping[str, Any], source: str) -> ParamSpec:
    """Check one spec and build its :class:`ParamSpec`; every problem names the key and where it came from."""
    if not isinstance(raw, Mapping):
        raise UserError(f"Search space ({source}): {key} must be a mapping with a 'type' "
                        f"(float, int or categorical), got {raw!r}.")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise UserError(f"Search space ({source}): {key} has unknown field {unknown[0]!r}; valid fields: "
                        f"{', '.join(sorted(_FIELDS))}.")
    kind = raw.get("type")
    if kind not in TYPES:
        raise UserError(f"Search space ({source}): {key}.type must be one of {', '.join(TYPES)}, "
                        f"got {kind!r}.")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise UserError(f"Search space ({source}): {key} has an empty range: categorical 'choices' must "
                            f"be a non-empty list, got {choices!r}.")
        return ParamSpec(key, kind, choices=tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise UserError(f"Search space ({source}): {key} ({kind}) needs both 'low' and 'high'.")
    low, high = (_number(raw[f], key, f, source) for f in ("low", "high"))
    log = bool(raw.get("log", False))
    step = raw.get("step")
    if step is not None:
        step = _number(step, key, "step", source)
        if step <= 0:
            raise UserError(f"Search space ({source}): {key}.step must be positive, got {step!r}.")
    if kind == "int":
        if any(float(v) != int(v) for v in (low, high, step or 1)):
            raise UserError(f"Search space ({source}): {key} is an int parameter; low, high and step must be "
                            f"whole numbers, got low={low!r}, high={high!r}, step={step!r}.")
        low, high, step = int(low), int(high), (int(step) if step is not None else None)
    if low >= high:
        raise UserError(f"Search space ({source}): {key} has an empty range: low={low!r} must be below "
                        f"high={high!r}. Fix the range, or pin the value with --set {key}=VALUE instead.")
    if log and low <= 0:
        raise UserError(f"Search space ({source}): {key} is log-scaled, so low must be positive, "
                        f"got {low!r}.")
    if log and step is not None:
        raise UserError(f"Search space ({source}): {key} cannot be log-scaled and stepped at once (Optuna "
                        f"refuses it); drop 'log' or 'step'.")
    return ParamSpec(key, kind, low=low, high=high, log=log, step=step)


def _check_key(key: Any, source: str) -> str:
    if not isinstance(key, str) or "." not in key or key.split(".")[0] not in ("method", "train", "dataset",
                                                                               "data", "eval"):
        raise UserError(f"Search space ({source}): key {key!r} must be a dotted configuration key such as "
                        f"train.lr or method.bottleneck (sections: method, train, dataset, data, eval).")
    if key in ("method.name", "dataset.name"):
        raise UserError(f"Search space ({source}): {key} cannot be searched; a study tunes one method on one "
                        f"dataset.")
    return key


def build_space(declared: Mapping[str, Any], user: Mapping[str, Any] | None = None,
                method: str = "the method") -> dict[str, ParamSpec]:
    """Merge the method's declared space with the user's file and check every parameter.

    A user entry that is ``null`` removes the parameter; a partial mapping (no ``type``) updates the declared
    spec field by field (narrowing it); a full mapping replaces or adds it.
    """
    merged: dict[str, dict[str, Any]] = {}
    for key, raw in declared.items():
        merged[_check_key(key, f"declared by {method}")] = dict(raw) if isinstance(raw, Mapping) else raw
    for key, raw in (user or {}).items():
        key = _check_key(key, "--search-space")
        if raw is None:
            if key not in merged:
                raise UserError(f"Search space (--search-space): {key}: null removes a declared parameter, "
                                f"but {method} declares no {key} (declared: {', '.join(merged) or 'none'}).")
            del merged[key]
        elif isinstance(raw, Mapping) and "type" not in raw:
            if key not in merged:
                raise UserError(f"Search space (--search-space): {key} is not declared by {method}, so it "
                                f"needs a full spec with a 'type' (float, int or categorical).")
            base = merged[key]
            if "choices" in raw:
                base = {"type": base.get("type"), "choices": raw["choices"]}
            merged[key] = {**base, **raw}
        else:
            merged[key] = raw
    sources = {key: ("--search-space" if key in (user or {}) else f"declared by {method}") for key in merged}
    space = {key: parse_param(key, raw, sources[key]) for key, raw in merged.items()}
    if not space:
        raise UserError(f"The search space is empty: {method} declares no searchable parameters. Pass "
                        f"--search-space FILE with e.g. 'train.lr: {{type: float, low: 1e-5, high: 1e-3, "
                        f"log: true}}'.")
    return space


def format_params(params: Mapping[str, Any]) -> str:
    """``train.lr=0.0003, method.k=2``: sampled values as a sweep summary prints them."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def load_space_file(path: Path) -> dict[str, Any]:
    """Read a user search-space YAML file (a mapping of dotted keys to specs or null)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"Cannot read the search-space file {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"The search-space file {path} is not valid YAML: {exc}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"The search-space file {path} must hold a mapping of dotted keys to specs, not a "
                        f"{type(data).__name__}.")
    return data
