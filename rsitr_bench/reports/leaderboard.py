"""The leaderboard model: registry runs grouped into tables that may honestly be compared.

Rules, each because a published table broke it:

* **One table per test split.** Runs share a table only when their test split has the same fingerprint
  (sha256 of the split's content) and they were scored with the same protocol, tie policy and cut-offs.
  Two tables of one dataset are never merged, and the report says why they are apart.
* **Compliant runs are ranked; non-compliant ones are not.** A run that selected its model on test, or whose
  leakage audit failed, or that scored only part of its split (``--limit``), is stamped and shown in its own
  unranked table below the ranked one.
* **Ties are stated.** The best compliant run is tested against every other (see :mod:`.compare`); runs the
  test cannot separate from it are marked.
* **Repeats are not double-counted.** Of several runs of one configuration the newest is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rsitr_bench.reports.compare import TieVerdict, ties_with_best
from rsitr_bench.reports.labels import legend_text, short_labels
from rsitr_bench.reports.published import PublishedDataset, PublishedRow
from rsitr_bench.reports.runs import RecordFacts, RunRecord

NON_COMPLIANT = "NON-COMPLIANT"


def metric_keys(ks: Sequence[int]) -> list[str]:
    return [f"i2t_R@{k}" for k in ks] + [f"t2i_R@{k}" for k in ks] + ["mR"]


@dataclass
class Row(RecordFacts):
    """One leaderboard line: one run (the newest of its configuration).

    ``label`` is short (``mps-clip #2``, see :mod:`.labels`); ``distinct`` holds the configuration keys, with
    raw values, that tell it from the other rows of its method (empty when it is its method's only row).
    """

    record: RunRecord
    label: str
    stats: dict[str, dict[str, float]]
    distinct: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, str] = field(default_factory=dict)  # metric -> "best" | "second"
    rank: int | None = None
    verdict: TieVerdict | None = None

    @property
    def compliant(self) -> bool:
        return self.record.compliant

    @property
    def stamp(self) -> str:
        return "" if self.compliant else f"{NON_COMPLIANT}: " + "; ".join(self.record.reasons or ["unknown"])

    @property
    def wall_time_s(self) -> float | None:
        return self.record.result.get("wall_time_s")

    def mean(self, key: str) -> float | None:
        cell = self.stats.get(key)
        return None if cell is None else float(cell["mean"])

    @property
    def legend(self) -> str:
        """What the short label stands for: every distinct key, floats at 3 significant digits."""
        return legend_text(self.distinct)

    @property
    def comparison(self) -> str:
        """Against the best run: ``best``, ``≈ best (p=…)``, ``p=…`` or why no test was possible."""
        if self.rank == 1:
            return "best"
        v = self.verdict
        if v is None or v.separable is None:
            return "n/a" + (f" ({v.reason})" if v and v.reason else "")
        return f"≈ best (p={v.p_value:.2f})" if not v.separable else f"p={v.p_value:.3f}"

    def to_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "label": self.label, "configuration": self.distinct, "method": self.record.method,
            "run_id": self.record.id, "rank": self.rank,
            "compliant": self.compliant, "stamp": self.stamp,
            "selection": self.record.result.get("selection"),
            "metrics": self.stats, "marks": self.marks, "seeds": self.record.result.get("seeds"),
            "parameters": {"trainable": self.trainable, "total": self.total}, "wall_time_s": self.wall_time_s,
            "vs_best": None if v is None else {"p_value": v.p_value, "delta_mR": v.delta,
                                                "separable": v.separable, "reason": v.reason},
            "tied_with_best": v is not None and v.separable is False,
        }


@dataclass
class Comparison:
    """A published row beside one reproduced run (``row`` None when no run reproduces it)."""

    published: PublishedRow
    row: Row | None = None
    deltas: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.published.to_dict(), "reproduced_run": self.row.record.id if self.row else None,
                "reproduced_label": self.row.label if self.row else None,
                "reproduced_compliant": self.row.compliant if self.row else None, "delta": self.deltas}


@dataclass
class Table:
    """Runs measured on one test split content with one protocol: the unit of comparison."""

    fingerprint: dict[str, Any]
    protocol: str
    ties: str
    ks: list[int]
    ranked: list[Row]
    unranked: list[Row]
    superseded: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return metric_keys(self.ks)

    @property
    def rows(self) -> list[Row]:
        return self.ranked + self.unranked

    @property
    def legend(self) -> list[tuple[str, str]]:
        """``(short label, the configuration it stands for)`` for every row named by a number, by label."""
        numbered = [row for row in self.rows if row.distinct]
        numbered.sort(key=lambda row: (row.record.method, int(row.label.rpartition("#")[2])))
        return [(row.label, row.legend) for row in numbered]

    @property
    def title(self) -> str:
        fp = self.fingerprint
        return (f"test split {fp.get('split', '?')}: {fp.get('images', '?')} images, "
                f"{fp.get('captions', '?')} captions, fingerprint {str(fp.get('sha256', ''))[:12]} "
                f"(protocol {self.protocol}, ties "
                f"{self.ties}, normalization {fp.get('normalization', '?')})")

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "protocol": self.protocol, "ties": self.ties, "ks": self.ks,
                "title": self.title, "legend": dict(self.legend),
                "ranked": [r.to_dict() for r in self.ranked],
                "unranked": [r.to_dict() for r in self.unranked], "superseded_runs": self.superseded}


def _label_rows(rows: list[Row]) -> None:
    """Name each row by its method, numbered when the method has several configurations (:mod:`.labels`)."""
    labels = short_labels([(row.record.method, row.record.measured_config) for row in rows])
    for row, (label, distinct) in zip(rows, labels, strict=True):
        row.label, row.distinct = label, distinct


def _mark_best(rows: list[Row], metrics: list[str]) -> None:
    """Best and second-best value of every metric among ranked rows (equal values share a mark)."""
    for key in metrics:
        values = sorted({v for r in rows if (v := r.mean(key)) is not None}, reverse=True)
        for row in rows:
            value = row.mean(key)
            if values and value == values[0]:
                row.marks[key] = "best"
            elif len(values) > 1 and value == values[1]:
                row.marks[key] = "second"


def build_tables(records: list[RunRecord], alpha: float = 0.05, n_boot: int = 1000) -> list[Table]:
    """Group runs into comparable tables, rank the compliant ones and test them against the best."""
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.comparability_key, []).append(record)
    tables = []
    for (_, protocol, ties, ks), members in groups.items():
        newest: dict[tuple[str, str], RunRecord] = {}
        superseded = []
        for record in sorted(members, key=lambda r: r.created):
            key = (record.method, record.config_digest)
            if key in newest:
                superseded.append(newest[key].id)
            newest[key] = record
        rows = [Row(r, r.method, r.result["summary"]) for r in newest.values()]
        _label_rows(rows)
        ranked = sorted((r for r in rows if r.compliant), key=lambda r: -(r.mean("mR") or 0.0))
        unranked = sorted((r for r in rows if not r.compliant), key=lambda r: -(r.mean("mR") or 0.0))
        for rank, row in enumerate(ranked, 1):
            row.rank = rank
        table = Table(members[0].fingerprint, str(protocol), str(ties), list(ks), ranked, unranked,
                      superseded)
        _mark_best(ranked, table.metrics)
        if len(ranked) > 1:
            verdicts = ties_with_best(ranked[0].record, [r.record for r in ranked[1:]], alpha, n_boot)
            for row in ranked[1:]:
                row.verdict = verdicts[row.record.id]
        tables.append(table)
    tables.sort(key=lambda t: -len(t.rows))
    return tables


def compare_published(published: PublishedDataset, tables: list[Table]) -> tuple[list[Comparison], str]:
    """Pair every published row with the runs that reproduce it on a split of the published size.

    Returns the comparisons and a note on why some Δ could not be computed (e.g. no run on the full split).
    """
    same_size = [t for t in tables if (t.fingerprint.get("images"), t.fingerprint.get("captions")) ==
                 (published.images, published.captions)]
    note = "" if same_size else (
        f"No reproduced run used the published test split size ({published.images} images, "
        f"{published.captions} captions), so no Δ is computed.")
    comparisons = []
    for pub in published.rows:
        matched = [row for t in same_size for row in t.rows
                   if pub.matches(row.record.method, row.record.flat_config)]
        if not matched:
            comparisons.append(Comparison(pub))
        for row in matched:
            deltas = {}
            for key in metric_keys((1, 5, 10)):
                mine, theirs = row.mean(key), pub.metric(key)
                if mine is not None and theirs is not None:
                    deltas[key] = round(mine - theirs, 2)
            comparisons.append(Comparison(pub, row, deltas))
    return comparisons, note
