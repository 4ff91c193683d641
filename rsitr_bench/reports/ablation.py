"""Ablation tables: the runs of one ``rsitr-bench ablate`` study, each row against the full method.

Why a table of its own: an ablation asks "what does this part add?", which the leaderboard cannot answer. Each
row shows its test mR (mean ± std over seeds), Δ against the full method, and the paired sign-flip test of
:mod:`.compare` over the test queries, so a gap inside the noise reads as such (the published MPS-CLIP ablation
gaps are all below the authors' own ±1-1.5 % run-to-run noise, docs/mps-clip.md §8).

The test pairs both runs query by query, each query's hit rates averaged over the run's seeds; it is run only
when both runs used the same seeds, so seed i of the row is paired with seed i of the full method. Rows come
from the registry alone: the study and row names, labels and order are the runs' tags (written by
:mod:`rsitr_bench.sweeps.ablation`), and the oracle and evaluation-only marks come from each run's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rsitr_bench.metrics import paired_test
from rsitr_bench.reports.compare import missing_hits_reason, per_query_result
from rsitr_bench.reports.runs import RecordFacts, RunRecord
from rsitr_bench.sweeps.ladder import FULL, TAG


@dataclass
class AblationLine(RecordFacts):
    """One row of an ablation table: its newest finished run and the comparison with the full method."""

    record: RunRecord
    delta: float | None = None  # mR of this row − mR of the full method
    ci: tuple[float, float] | None = None  # 95 % bootstrap CI of delta over the test queries
    p_value: float | None = None
    reason: str = ""  # why the paired test is missing, if it is

    @property
    def name(self) -> str:
        return str(self.record.tags.get("row", ""))

    @property
    def label(self) -> str:
        return str(self.record.tags.get("label") or self.name)

    @property
    def group(self) -> str:
        return str(self.record.tags.get("group", ""))

    @property
    def order(self) -> tuple[int, float]:
        return int(self.record.tags.get("order", 1 << 30)), self.record.created

    @property
    def mr(self) -> dict[str, float]:
        return self.record.result["summary"]["mR"]

    @property
    def upper_bound(self) -> bool:
        """Perspectives from ground truth (``oracle-boxes``): what a perfect localiser could give, not a result."""
        return bool(self.record.result.get("oracle_perspectives"))

    @property
    def evaluation_only(self) -> bool:
        return bool(self.record.result.get("evaluation_only"))

    @property
    def builtin_vocabulary(self) -> bool:
        """Gallery keywords from the built-in lexicon: a run that loaded no training captions to learn one."""
        return any((seed.get("guidance_stats") or {}).get("vocabulary_builtin")
                   for seed in (self.record.result.get("per_seed") or {}).values())

    @property
    def marks(self) -> list[str]:
        """What the row is besides a number: untrained, an upper bound, non-compliant for another reason."""
        out = []
        if self.evaluation_only:
            out.append("untrained (evaluation only)")
        if self.upper_bound:
            out.append("UPPER BOUND: oracle perspectives, not deployable")
        other = [r for r in self.record.reasons if not r.startswith("oracle perspectives")]
        if other:
            out.append("NON-COMPLIANT: " + "; ".join(other))
        if self.builtin_vocabulary:
            out.append("gallery keywords from the built-in lexicon (no training captions loaded)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.name, "label": self.label, "group": self.group, "run_id": self.record.id,
                "mR": self.mr, "seeds": self.record.result.get("seeds"), "delta_mR": self.delta,
                "ci": None if self.ci is None else list(self.ci), "p_value": self.p_value,
                "paired_test_skipped": self.reason or None, "trainable_params": self.trainable,
                "evaluation_only": self.evaluation_only, "upper_bound": self.upper_bound,
                "compliant": self.record.compliant, "marks": self.marks}


@dataclass
class AblationTable:
    """One study on one dataset: its rows in ladder order and the full method they are compared with."""

    study: str
    dataset: str
    method: str
    lines: list[AblationLine]
    full: AblationLine | None
    alpha: float
    n_boot: int
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        fp = self.full.record.fingerprint if self.full else self.lines[0].record.fingerprint
        return (f"Ablation {self.study}: {self.method} on {self.dataset} ({fp.get('images', '?')} test images, "
                f"{fp.get('captions', '?')} captions)")

    def significant(self, line: AblationLine) -> bool:
        return line.p_value is not None and line.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "dataset": self.dataset, "method": self.method, "alpha": self.alpha,
                "n_boot": self.n_boot, "full_run": self.full.record.id if self.full else None,
                "rows": [line.to_dict() for line in self.lines], "notes": self.notes}


def is_ablation_run(record: RunRecord) -> bool:
    return TAG in record.tags


def study_of(record: RunRecord) -> str:
    """The ablation study an ablation run belongs to."""
    return str(record.tags[TAG])


def ablation_tables(records: list[RunRecord], alpha: float = 0.05, n_boot: int = 1000,
                    study: str | None = None) -> list[AblationTable]:
    """The ablation tables of ``records`` (one dataset's finished test runs), one per study, by study name."""
    studies: dict[str, list[RunRecord]] = {}
    for record in records:
        if is_ablation_run(record) and (study is None or study_of(record) == study):
            studies.setdefault(study_of(record), []).append(record)
    return [build_ablation_table(name, runs, alpha, n_boot) for name, runs in sorted(studies.items())]


def build_ablation_table(study: str, records: list[RunRecord], alpha: float = 0.05,
                         n_boot: int = 1000) -> AblationTable:
    """Rows of one study (the newest finished run of each row name), each tested against the full method."""
    newest: dict[str, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.created):
        newest[str(record.tags.get("row", record.id))] = record
    lines = sorted((AblationLine(r) for r in newest.values()), key=lambda line: line.order)
    full = next((line for line in lines if line.name == FULL), None)
    first = (full or lines[0]).record
    table = AblationTable(study, first.dataset, first.method, lines, full, alpha, n_boot)
    if full is None:
        table.notes.append("The full method's row has not finished yet: no Δ and no paired test.")
        return table
    reference = per_query_result(full.record)
    for line in lines:
        if line is not full:
            _compare(line, full, reference, n_boot)
    if any(line.builtin_vocabulary for line in lines):
        table.notes.append("Rows marked \"built-in lexicon\" chose their gallery keywords from the built-in lexicon "
                           "of remote-sensing objects: an evaluation-only run loads no training captions, from "
                           "which the trained rows learn their keyword vocabulary. Their gap to the trained rows "
                           "includes that difference.")
    return table


def _compare(line: AblationLine, full: AblationLine, reference: Any, n_boot: int) -> None:
    """Δ mR of ``line`` against the full method, with the paired test when both runs allow it."""
    if line.record.comparability_key != full.record.comparability_key:
        line.reason = "scored on another test split or protocol than the full method: not comparable"
        return
    line.delta = round(float(line.mr["mean"]) - float(full.mr["mean"]), 2)
    if list(line.record.result.get("seeds") or []) != list(full.record.result.get("seeds") or []):
        line.reason = "other seeds than the full method: no seed-paired test"
        return
    candidate = per_query_result(line.record) if reference is not None else None
    if reference is None or candidate is None:
        line.reason = missing_hits_reason(line.record, full.record)
        return
    test = paired_test(candidate, reference, metric="mR", n_boot=n_boot, seed=0)
    line.delta = float(test["delta"])
    line.ci = (float(test["ci"][0]), float(test["ci"][1]))
    line.p_value = float(test["p_value"])
