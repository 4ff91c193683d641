"""Short row labels, and the legend that spells each one out.

A row's name has to fit a table cell, a plot legend and a LaTeX column, but what tells two runs of one
method apart can be a dozen configuration keys with long float values (a sweep's
``lambda_mpc=0.7742336894342167``). Squeezing them into the name pushed the HTML table's mR column out of
view and overlapped the plot axes, and naming only some keys left rows that read the same. So:

* a method with one configuration in the table is named by the method alone;
* a method with several gets ``mps-clip #1``, ``mps-clip #2``, … numbered in the order their
  configurations were first run, and each of those rows carries *every* key whose value differs among
  them. Renderers print that as a legend beside the table, floats at 3 significant digits
  (:func:`format_value`); JSON keeps the raw values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

UNSET = "unset"  # a key that one configuration of the group has and another lacks


def format_value(value: Any) -> str:
    """A configuration value as the legend prints it: floats at 3 significant digits, lists element-wise."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def legend_text(distinct: Mapping[str, Any]) -> str:
    """``method.k=2, train.lr=4e-05``: the keys in sorted order, so entries of one table line up."""
    return ", ".join(f"{key}={format_value(value)}" for key, value in sorted(distinct.items()))


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flattened keys whose value is not the same in every configuration (missing counts as a value)."""
    keys = {k for config in configs for k in config}
    return sorted(k for k in keys if len({repr(config.get(k, UNSET)) for config in configs}) > 1)


def short_labels(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, distinct keys with raw values)`` for each ``(method, flattened config)``, in creation order
    (oldest first); ``distinct`` is empty for a method that has one configuration in the table."""
    by_method: dict[str, list[int]] = {}
    for i, (method, _) in enumerate(runs):
        by_method.setdefault(method, []).append(i)
    out: list[tuple[str, dict[str, Any]]] = [("", {})] * len(runs)
    for method, members in by_method.items():
        if len(members) == 1:
            out[members[0]] = (method, {})
            continue
        keys = differing_keys([runs[i][1] for i in members])
        for number, i in enumerate(members, 1):
            out[i] = (f"{method} #{number}", {k: runs[i][1].get(k, UNSET) for k in keys})
    return out
