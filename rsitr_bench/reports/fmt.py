"""Cell formatting shared by every renderer, so a number reads the same in Markdown, LaTeX, CSV and HTML."""

from __future__ import annotations

from collections.abc import Mapping


def mean_std(cell: Mapping[str, float] | None, pm: str = "±") -> str:
    """``12.34 ± 0.56`` over several seeds, ``12.34`` for one (a std of one seed would claim a spread)."""
    if not cell:
        return "—"
    if int(cell.get("n", 1)) > 1:
        return f"{cell['mean']:.2f} {pm} {cell['std']:.2f}"
    return f"{cell['mean']:.2f}"


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def params(count: int | None) -> str:
    """Parameter counts as papers print them: 151.3M, 0.51M, 12.3k, 0."""
    if count is None:
        return "—"
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M" if count < 10_000_000 else f"{count / 1e6:.1f}M"
    if count >= 1_000:
        return f"{count / 1e3:.1f}k"
    return str(count)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def metric_header(key: str) -> tuple[str, str]:
    """``i2t_R@5`` -> (``i2t``, ``R@5``); ``mR`` -> (``""``, ``mR``)."""
    direction, _, k = key.partition("_R@")
    return ("", key) if not k else (direction, f"R@{k}")


LEGEND = ("Unit: percent; mean ± std over seeds (a single seed shows no std). Among compliant runs, ranked "
          "by mR: best in bold, second {second}. \"≈ best\": the paired sign-flip test over test queries "
          "(α = {alpha}) cannot separate the run from the best. Non-compliant runs (model selected on test, "
          "or a failed leakage audit) are stamped and listed apart, never ranked. Published rows: mR "
          "recomputed from the six recalls; ⚠ marks a printed mR that is not their mean beyond rounding "
          "(> 0.01).")

CONFIGURATIONS = ("Configurations: every configuration key whose value differs between the numbered runs of "
                  "one method (floats to 3 significant digits).")

ABLATION_LEGEND = ("Ablation tables: test mR, mean ± std over seeds. Δ: the row's mR minus the full method's, in "
                   "points; in bold when the paired sign-flip test over the test queries (each query's hits "
                   "averaged over the seeds, both runs on the same seeds) gives p < α = {alpha}. CI: the 95 % "
                   "bootstrap interval of Δ over the queries. Untrained rows are scored without training; an "
                   "UPPER BOUND row reads ground-truth boxes, which no deployed system has.")


def interval(ci: tuple[float, float] | None) -> str:
    """``[-1.20, 0.35]``, or ``—`` without one."""
    return "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def p_value(p: float | None) -> str:
    return "—" if p is None else f"{p:.3f}"
