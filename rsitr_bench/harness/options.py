"""Plugin options, validated by pydantic against the plugin's own plain dataclass.

A plugin declares its options as an ordinary ``@dataclass`` with type hints: ranges as
``Annotated[int, Field(ge=1)]``, choices as ``Literal[...]``, and a rule that ties several fields together in
``__post_init__`` (raising ``ValueError``). :class:`pydantic.TypeAdapter` checks user values against that
declaration, so plugins need no hand-written checks and third-party plugins get the same ones; this module
only turns pydantic's errors into one :class:`~rsitr_bench.errors.ConfigError` paragraph that names the key,
the value and what is allowed.

pydantic converts where the intent is plain (``"4e-5"`` -> 4e-05, ``"7"`` -> 7, a YAML list -> a tuple). Three
conventions of the command line are kept on top, because a ``--set`` value is a single YAML scalar:

* a list field takes a comma-separated string (``--set run.seeds=0,1,2``) or a single value;
* a text field takes a number (``--set data.test_split=2017``);
* true/false fill only yes/no fields, and a yes/no field takes only true/false: a mistyped flag is an
  error, never silently 1, nor is ``1`` or ``"yes"`` silently true.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from pydantic import TypeAdapter, ValidationError

from rsitr_bench.errors import ConfigError

T = TypeVar("T")

#: The scalar types, by the prefix of pydantic's error types for them.
_SCALARS = {bool: "bool", int: "int", float: "float", str: "string"}
#: pydantic error types, by the prefix they share, and what the message says instead.
_TYPE_PHRASES = {"int": "expects an integer", "float": "expects a number", "bool": "expects true or false",
                 "string": "expects a string", "list": "expects a list", "tuple": "expects a list",
                 "dict": "expects a mapping", "dataclass": "expects a mapping", "none": "expects null"}


def build_section(cls: type[T], values: Mapping[str, Any] | None, section: str,
                  defaults: Mapping[str, Any] | None = None) -> T:
    """``cls`` built from ``values``: every key known, every value of its declared type and range.

    ``section`` (``train``, ``method``, ...) prefixes the keys the error names. ``defaults`` (a preset's) replace
    declared defaults and are checked the same way; ``values`` override them.
    """
    if not isinstance(values or {}, Mapping):
        raise ConfigError(f"Section {section!r} must be a mapping of options (key: value), got {values!r}.")
    values = _prepare(cls, {**(defaults or {}), **(values or {})}, section, "")
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as exc:
        raise ConfigError(f"Invalid {section} configuration: "
                          f"{'; '.join(_describe(error, cls) for error in exc.errors())}.") from None


def validated(obj: T, section: str) -> T:
    """A checked copy of an options object built in code, where no configuration file passed the harness."""
    cls = type(obj)
    return build_section(cls, {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if f.init}, section)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


# ------------------------------------------------------------------------ command-line conventions


def _prepare(cls: type, values: dict[str, Any], section: str, path: str) -> dict[str, Any]:
    """``values`` with the command-line conventions applied; ``path`` is where ``cls`` sits in ``section``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{section}.{path}".rstrip(".")
        raise ConfigError(f"Unknown key {where}.{unknown[0]}. Valid keys of section {where!r}: "
                          f"{', '.join(names) or '(none)'}.")
    hints = typing.get_type_hints(cls)
    return {k: _convention(v, hints[k], section, f"{path}{k}") for k, v in values.items()}


def _convention(value: Any, hint: Any, section: str, key: str) -> Any:
    """``value`` after the command-line conventions of the module docstring; pydantic checks the rest."""
    if value is None:
        return None
    members = _members(hint)
    sequence = next((m for m in members if (typing.get_origin(m) or m) in (list, tuple)), None)
    if sequence is not None:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value if isinstance(value, (list, tuple)) else [value]
    nested = next((m for m in members if dataclasses.is_dataclass(m)), None)
    if nested is not None and isinstance(value, Mapping):
        return _prepare(nested, dict(value), section, f"{key}.")
    if not all(m in _SCALARS or typing.get_origin(m) is Literal for m in members):
        return value
    if isinstance(value, bool) != (bool in members):
        wanted = _TYPE_PHRASES[_SCALARS[members[0]]] if members[0] in _SCALARS else \
            "expects one of " + ", ".join(map(repr, _choices(members)))
        raise ConfigError(f"Invalid {section} configuration: {key}={value!r}: {wanted}.")
    if isinstance(value, (int, float)) and str in members and not {int, float} & set(members):
        return str(value)
    return value


def _members(hint: Any) -> list[Any]:
    """The types a hint accepts besides None (``int | None`` -> [int])."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [m for m in typing.get_args(hint) if m is not type(None)]
    return [hint]


def _choices(members: list[Any]) -> list[Any]:
    return [c for m in members for c in typing.get_args(m)]


# ------------------------------------------------------------------------------------- messages


def _describe(error: Mapping[str, Any], cls: type) -> str:
    """One pydantic error as ``key=value: what is wrong``; a rule of ``__post_init__`` speaks for itself."""
    kind, ctx, loc = error["type"], error.get("ctx", {}), error["loc"]
    if not loc:
        return str(ctx.get("error", error["msg"]))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    hint = _hint_at(cls, loc)
    shown = f"{key}={_converted(error['input'], hint)!r}"
    if kind == "value_error":
        return f"{shown}: {ctx['error']}"
    if kind == "literal_error":
        allowed = ", ".join(map(repr, _choices(_members(hint)))) if hint is not None else ctx["expected"]
        return f"{shown}: not allowed; choose one of {allowed}"
    if kind == "missing":
        return f"{key} is required"
    bounds = {"greater_than": ("gt", "must be greater than {}", "must be positive"),
              "greater_than_equal": ("ge", "must be at least {}", "must not be negative"),
              "less_than": ("lt", "must be less than {}", None), "less_than_equal": ("le", "must be at most {}", None)}
    if kind in bounds:
        name, phrase, at_zero = bounds[kind]
        return f"{shown}: {at_zero if at_zero and ctx[name] == 0 else phrase.format(ctx[name])}"
    family = kind.split("_")[0]
    return f"{shown}: {_TYPE_PHRASES.get(family, error['msg'][:1].lower() + error['msg'][1:])}"


def _hint_at(cls: type, loc: tuple[Any, ...]) -> Any:
    """The declared type (without ranges) at an error location, or None where it cannot be followed."""
    hint: Any = cls
    for part in loc:
        members = _members(hint)
        if isinstance(part, int):
            hint = next((typing.get_args(m)[min(part, len(typing.get_args(m)) - 1)] for m in members
                         if (typing.get_origin(m) or m) in (list, tuple) and typing.get_args(m)), None)
        else:
            owner = next((m for m in members if dataclasses.is_dataclass(m)), None)
            hint = typing.get_type_hints(owner).get(part) if owner is not None else None
        if hint is None:
            return None
    return hint


def _converted(raw: Any, hint: Any) -> Any:
    """``raw`` as the field holds it ("0" -> 0.0 for a number), so the message shows what was checked."""
    if hint is None:
        return raw
    try:
        return TypeAdapter(hint).validate_python(raw)
    except (ValidationError, TypeError):
        return raw
