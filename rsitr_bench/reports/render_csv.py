"""CSV rendering: one flat table (reproduced runs and published rows) for spreadsheets and pandas.

Every value is a plain number (no ``±`` strings), with mean and std in separate columns, so nothing has to
be parsed back out of text. ``configuration`` spells out a numbered label (``mps-clip #2``): the keys that
differ between the runs of its method.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from rsitr_bench.reports.leaderboard import Comparison, Row, Table, metric_keys
from rsitr_bench.reports.model import Report

_METRICS = metric_keys((1, 5, 10))
COLUMNS = (["dataset", "kind", "table", "fingerprint", "protocol", "ties", "rank", "label", "configuration",
            "method", "run_id", "compliant", "stamp", "vs_best_p", "tied_with_best"]
           + [f"{k}_{s}" for k in _METRICS for s in ("mean", "std")]
           + ["n_seeds", "trainable_params", "total_params", "wall_time_s", "backbone", "setting", "source",
              "mR_printed", "mR_recomputed", "mR_mismatch", "reproduced_run", "delta_mR"])


def _run_line(dataset: str, index: int, table: Table, row: Row) -> dict[str, Any]:
    v = row.verdict
    line: dict[str, Any] = {
        "dataset": dataset, "kind": "reproduced", "table": index,
        "fingerprint": table.fingerprint.get("sha256"), "protocol": table.protocol, "ties": table.ties,
        "rank": row.rank, "label": row.label, "configuration": row.legend,
        "method": row.record.method, "run_id": row.record.id, "compliant": row.compliant, "stamp": row.stamp,
        "vs_best_p": v.p_value if v else None, "tied_with_best": v.separable is False if v else None,
        "n_seeds": row.n_seeds, "trainable_params": row.trainable, "total_params": row.total,
        "wall_time_s": row.wall_time_s,
    }
    for key, cell in row.stats.items():
        line[f"{key}_mean"], line[f"{key}_std"] = cell.get("mean"), cell.get("std")
    return line


def _published_line(dataset: str, c: Comparison) -> dict[str, Any]:
    p = c.published
    line: dict[str, Any] = {
        "dataset": dataset, "kind": "published", "label": p.method, "backbone": p.backbone,
        "setting": p.setting, "source": "; ".join(p.sources), "mR_printed": p.mR, "mR_std": p.mR_std,
        "mR_mismatch": p.mR_mismatch,
        "mR_recomputed": None if p.mR_recomputed is None else round(p.mR_recomputed, 2),
        "reproduced_run": c.row.record.id if c.row else None, "delta_mR": c.deltas.get("mR"),
    }
    for key in _METRICS:
        line[f"{key}_mean"] = p.metric(key)
    return line


def render(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for section in report.sections:
        for i, table in enumerate(section.tables, 1):
            writer.writerows(_run_line(section.dataset, i, table, row) for row in table.rows)
        writer.writerows(_published_line(section.dataset, c) for c in section.comparisons)
    return buffer.getvalue()
