"""What ``run``, ``eval`` and ``leaderboard`` print and write: one recall table for one run, one table with a row
per run for several (a grid, a preset), and the ``--output`` files.

``--output`` files are copies for the user's own pipeline (CLIP_benchmark's ``--output``); the registry keeps
its record either way, so reports never depend on them. The suffix chooses the content, and an unknown suffix
is refused before anything runs, so a typo never costs a finished run its file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsitr_bench.cli.tables import tabulate
from rsitr_bench.errors import UserError
from rsitr_bench.harness.atomic import write_json_atomic, write_text_atomic

OUTPUT_SUFFIXES = (".json", ".md")


def check_outputs(paths: Sequence[Path]) -> None:
    """Refuse an ``--output`` path whose suffix says no known content (before any run starts)."""
    for path in paths:
        if path.suffix not in OUTPUT_SUFFIXES:
            raise UserError(f"--output {path}: the suffix chooses what is written, and {path.suffix or 'no suffix'!r} "
                            f"is none of {', '.join(OUTPUT_SUFFIXES)} (.json: the result, .md: the table).")


def _mr(result: dict[str, Any]) -> str:
    cell = result["summary"]["mR"]
    return f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell.get("std") else "")


def results_table(results: Sequence[Any], tablefmt: str = "simple") -> str:
    """One row per run: model (or row label), dataset, R@k of both directions, mR, compliance and run id.

    ``results`` are :class:`rsitr_bench.harness.evaluation.EvalResult`; a published-mR column and the leakage
    audit appear when some row has a published number (evaluation presets).
    """
    ks = results[0].outcome.metrics["ks"]
    recalls = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks]
    by_model = any(r.model is not None for r in results)
    published = any(r.published_mr is not None for r in results)
    headers = ["model" if by_model else "row", "dataset", *recalls, "mR",
               *(["published mR", "leakage audit"] if published else []), "compliant", "run"]
    rows = []
    for r in results:
        result = r.outcome.metrics
        summary = result["summary"]
        compliance = result["compliance"]
        rows.append([r.model if by_model else r.label, result["dataset"],
                     *(f"{summary[key]['mean']:.2f}" if key in summary else "" for key in recalls), _mr(result),
                     *([("" if r.published_mr is None else f"{r.published_mr:.2f}"),
                        result["leakage_audit"].get("status", "")] if published else []),
                     "yes" if compliance["compliant"] else "no: " + "; ".join(compliance["reasons"]),
                     r.outcome.run_id])
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def _json_payload(results: Sequence[Any]) -> Any:
    """One run: its metrics.json; several: a list of ``{label, model, published_mR, run_id, result}``."""
    if len(results) == 1:
        return results[0].outcome.metrics
    return [{"label": r.label, "model": r.model, "published_mR": r.published_mr, "run_id": r.outcome.run_id,
             "result": r.outcome.metrics} for r in results]


def write_outputs(paths: Sequence[Path], results: Sequence[Any]) -> list[Path]:
    """Write each ``--output`` path atomically (see :data:`OUTPUT_SUFFIXES`); returns the paths written."""
    check_outputs(paths)
    for path in paths:
        if path.suffix == ".json":
            write_json_atomic(path, _json_payload(results))
        else:
            write_text_atomic(path, results_table(results, tablefmt="github") + "\n")
    return list(paths)


def print_results(results: Sequence[Any], outputs: Sequence[Path] = ()) -> None:
    """Print one run's recall table, or the table of several runs; then write ``outputs``."""
    if len(results) == 1:
        from rsitr_bench.reports.table import recall_table

        outcome = results[0].outcome
        print(recall_table(outcome.metrics))
        print(f"\nrecorded as run {outcome.run_id} in {outcome.run_dir}")
    else:
        print(results_table(results))
        datasets = dict.fromkeys(r.outcome.metrics["dataset"] for r in results)
        print(f"\nrecorded as {len(results)} runs; side by side with the registry's other runs: rsitr-bench report "
              + " ".join(f"--dataset {d}" for d in datasets))
    for path in write_outputs(outputs, results):
        print(f"wrote {path}")
