"""The rows of an MPS-CLIP ablation study: which configuration each row is, as data over the method's options.

Why a ladder and not a grid: the question an ablation answers is "what does each part add?", so the rows build
the method up one part at a time (global embedding → sub-images at test → G²A → MPR, docs/mps-clip.md §1-§6),
then take the full method apart one loss term at a time (§4), then swap the localiser that makes the
perspectives. Every row is an ordinary configuration of the method, set through its declared options, so a row
is reproducible with ``rsitr-bench run``/``eval`` and ``--set`` alone.

The core may not import a method plugin, so the ladder names options rather than importing ``MpsClipOptions``;
:func:`check_method` refuses a method that does not declare them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rsitr_bench.errors import UserError

#: The tag that names a run's ablation study (its value: the study name); reports group ablation runs by it.
TAG = "ablation"
#: The row every other row is compared with.
FULL = "full"
#: The method options the ladder sets per row; a study's base configuration may not set the first three (each
#: row decides them), while ``perspectives`` and the ``lambda_*`` of the base define the full method.
SWITCHES = ("adapters", "mpr", "test_fusion")
OPTIONS = (*SWITCHES, "lambda_con", "lambda_tri", "lambda_mpc", "lambda_mpt", "perspectives")
#: The localisers of the perspective rows besides the method's default one: fixed crops, the patch-saliency
#: localiser (``mps-clip``'s default before ``dense-clip`` localised better), and ``oracle-boxes``, which reads
#: ground-truth boxes, so its row is an upper bound that reports mark as such (the runner stamps it non-compliant).
LOCALISERS = ("grid", "clip-saliency", "oracle-boxes")
LOSS_TERMS = {"con": "L_con", "tri": "L_tri", "mpc": "L_MPC", "mpt": "L_MPT"}


@dataclass(frozen=True)
class LadderRow:
    """One row: a stable ``name`` (its registry tag), the ``label`` a table prints, its ``group`` (``ladder``,
    ``loss`` or ``perspectives``), the method options it sets, and whether it trains (``fit``) or is
    scored as configured (``rsitr-bench eval``)."""

    name: str
    label: str
    group: str
    options: Mapping[str, Any] = field(default_factory=dict)
    fit: bool = True


def mps_clip_ladder(default_perspectives: str) -> list[LadderRow]:
    """The rows, in table order, for a full method whose perspectives come from ``default_perspectives``.

    The default localiser's row is the full method itself, so the perspective rows are the other localisers.
    """
    untrained = {"adapters": False, "mpr": False}
    rows = [
        LadderRow("global", "global embedding only (zero-shot g)", "ladder",
                  {**untrained, "test_fusion": "global"}, fit=False),
        LadderRow("test-subimages", "+ sub-images at test (untrained, fused g and r)", "ladder",
                  {**untrained, "test_fusion": "fused"}, fit=False),
        LadderRow("g2a", "+ G²A adapters (L_con + L_tri)", "ladder",
                  {"adapters": True, "mpr": False, "test_fusion": "fused", "lambda_mpc": 0.0, "lambda_mpt": 0.0}),
        LadderRow(FULL, f"+ MPR = full method (perspectives: {default_perspectives})", "ladder",
                  {"adapters": True, "mpr": True, "test_fusion": "fused"}),
    ]
    full = rows[-1].options
    rows += [LadderRow(f"no-{term}", f"full − {symbol}", "loss", {**full, f"lambda_{term}": 0.0})
             for term, symbol in LOSS_TERMS.items()]
    rows += [LadderRow(f"perspectives-{name}", f"perspectives: {name}" + (" (oracle upper bound)" if name ==
                                                                          "oracle-boxes" else ""),
                       "perspectives", {**full, "perspectives": name})
             for name in LOCALISERS if name != default_perspectives]
    return rows


def check_method(method: str, options_class: type | None, base_method_options: Mapping[str, Any]) -> None:
    """Refuse a method whose options lack the ladder's switches, and a base that sets a switch itself."""
    declared = {f.name for f in dataclasses.fields(options_class)} if options_class else set()
    missing = [name for name in OPTIONS if name not in declared]
    if missing:
        raise UserError(f"Method {method!r} declares no {', '.join(missing)} option(s), which the ablation "
                        f"ladder sets per row; `rsitr-bench ablate` supports mps-clip and its presets.")
    fixed = [name for name in SWITCHES if name in base_method_options]
    if fixed:
        raise UserError(f"The ablation sets method.{', method.'.join(fixed)} itself for every row; leave "
                        f"{'it' if len(fixed) == 1 else 'them'} out of --set and --config.")


def select_rows(rows: list[LadderRow], names: list[str] | None) -> list[LadderRow]:
    """The rows named in ``names`` (all when None), in ladder order; an unknown name lists the known ones."""
    if not names:
        return rows
    known = [row.name for row in rows]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"Unknown ablation row {unknown[0]!r}; the rows are {', '.join(known)}.")
    return [row for row in rows if row.name in names]
