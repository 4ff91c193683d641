"""The report as data: one section per dataset, built once from the registry and rendered into every format.

Building and rendering are separate so that Markdown, LaTeX, CSV, JSON and HTML cannot disagree: they all
print the same :class:`Report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsitr_bench import __version__
from rsitr_bench.errors import UserError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.splits import load_splits
from rsitr_bench.reports import plots
from rsitr_bench.reports.ablation import AblationTable, ablation_tables, is_ablation_run, study_of
from rsitr_bench.reports.leaderboard import Comparison, Table, build_tables, compare_published
from rsitr_bench.reports.published import PublishedDataset, load_published
from rsitr_bench.reports.runs import dataset_runs
from rsitr_bench.reports.studies import StudySummary, summarise_study


@dataclass
class DatasetSection:
    """Everything the report says about one dataset."""

    dataset: str
    tables: list[Table]
    published: PublishedDataset | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    published_note: str = ""
    studies: list[StudySummary] = field(default_factory=list)
    plots: list[plots.Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ablations: list[AblationTable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        pub = self.published
        return {
            "dataset": self.dataset, "tables": [t.to_dict() for t in self.tables],
            "ablations": [a.to_dict() for a in self.ablations],
            "published": None if pub is None else {
                "test_split": {"images": pub.images, "captions": pub.captions}, "note": self.published_note,
                "rows": [c.to_dict() for c in self.comparisons]},
            "sweeps": [s.to_dict() for s in self.studies],
            "plots": [{"name": p.name, "title": p.title, "caption": p.caption, "file": f"plots/{p.name}.png"}
                      for p in self.plots],
            "notes": self.notes,
        }


@dataclass
class Report:
    sections: list[DatasetSection]
    alpha: float
    sources: dict[str, str]
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"rsitr_bench_version": self.version, "unit": "percent", "alpha": self.alpha,
                "published_sources": self.sources, "datasets": [s.to_dict() for s in self.sections]}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")


def _scene_labels(table: Table, host: PluginHost) -> tuple[Any, str]:
    """Reload a table's test split through its dataset plugin for the scene labels (or say why not)."""
    record = table.rows[0].record
    try:
        config = resolve_config(record.config, host)
        split = load_splits(config, host, trainable=False)["test"]
    except (UserError, OSError, ValueError) as exc:
        return None, f"per-scene-class recall not drawn: the test split could not be reloaded ({exc})"
    if split.fingerprint(config.data.normalization)["sha256"] != table.fingerprint.get("sha256"):
        return None, (f"per-scene-class recall not drawn: the test split rebuilt from run {record.id}'s "
                      f"configuration does not match the table's fingerprint (data changed on disk?)")
    if not split.image_labels:
        return None, "per-scene-class recall not drawn: the test split has no scene labels"
    return split, ""


def _section(dataset: str, registry: Registry, host: PluginHost, published: PublishedDataset | None,
             alpha: float, n_boot: int, with_plots: bool) -> DatasetSection | None:
    runs, trials = dataset_runs(registry, dataset)
    # Ablation rows answer "what does each part add?" in their own table; as leaderboard rows they would be
    # ten numbered variants of one method.
    records = [r for r in runs if not is_ablation_run(r)]
    ablations = ablation_tables(runs, alpha, n_boot)
    if not records and not trials and not ablations:
        return None
    section = DatasetSection(dataset, build_tables(records, alpha, n_boot), published, ablations=ablations)
    if not records and trials:
        section.notes.append("No finished test run of this dataset yet: only sweep trials (validation).")
    unreachable = [r.id for r in runs if not r.dir_reachable]
    if unreachable:
        shown = ", ".join(unreachable[:5]) + (f" and {len(unreachable) - 5} more" if len(unreachable) > 5 else "")
        section.notes.append(f"The run directories of {shown} are not reachable from this machine: their results "
                             f"come from the registry index, and their paired tests are skipped.")
    if len(section.tables) > 1:
        section.notes.append(f"Runs of {dataset} were measured on {len(section.tables)} different test "
                             f"splits (fingerprint, protocol or ties differ), so they are shown in separate "
                             f"tables and never compared.")
    if published is not None:
        section.comparisons, section.published_note = compare_published(published, section.tables)
    section.studies = [summarise_study(name, recs) for name, recs in sorted(trials.items())]
    if with_plots:
        _add_plots(section, host)
    return section


def _add_plots(section: DatasetSection, host: PluginHost) -> None:
    for i, table in enumerate(section.tables, 1):
        stem = f"{_slug(section.dataset)}-table{i}"
        curve = plots.recall_curves(f"{stem}-recall-at-k", table.rows)
        if curve:
            section.plots.append(curve)
        split, why = _scene_labels(table, host)
        per_class = plots.per_class_recall(f"{stem}-per-class", table.rows, split.image_labels,
                                           split.caption_image) if split is not None else None
        if per_class:
            section.plots.append(per_class)
        elif split is not None:
            why = "per-scene-class recall not drawn: no run has per-query data for the whole split"
        if why:
            section.notes.append(f"Table {i}: {why}.")
    for study in section.studies:
        stem = f"{_slug(section.dataset)}-sweep-{_slug(study.name)}"
        history = plots.optimisation_history(f"{stem}-history", study.name, study.trials)
        if history:
            section.plots.append(history)
        if study.importances:
            section.plots.append(plots.importances(f"{stem}-importances", study.name, study.importances))
        elif study.importance_note:
            section.notes.append(f"Sweep {study.name}: {study.importance_note}.")


def build_report(registry: Registry, host: PluginHost, datasets: Sequence[str] | None = None,
                 published_path: Path | None = None, with_published: bool = True, alpha: float = 0.05,
                 n_boot: int = 1000, with_plots: bool = True, ablation: str | None = None) -> Report:
    """Build the report of the given datasets (default: every dataset with finished runs in the registry).

    ``ablation``: only the table(s) of that ablation study (``rsitr-bench report --ablation STUDY``).
    """
    if ablation is not None:
        return _ablation_report(registry, datasets, ablation, alpha, n_boot)
    table = load_published(published_path) if with_published else None
    names = list(datasets) if datasets else registry.datasets()
    sections = []
    for name in names:
        pub = table.datasets.get(name) if table else None
        section = _section(name, registry, host, pub, alpha, n_boot, with_plots)
        if section is None and datasets:
            present = sorted({r.dataset for r in registry.list() if r.status == "finished"})
            raise UserError(f"No finished runs of dataset {name!r} in the registry at {registry.root}. "
                            f"Datasets with finished runs there: {', '.join(present) or 'none'}. Record one "
                            f"with `rsitr-bench run --method METHOD --dataset {name}` (or pass --registry).")
        if section is not None:
            sections.append(section)
    if not sections:
        raise UserError(f"The registry at {registry.root} holds no finished runs to report. Record one with "
                        f"`rsitr-bench run --method global-clip` (or pass --registry DIR).")
    return Report(sections, alpha, dict(table.sources) if table else {})


def _ablation_report(registry: Registry, datasets: Sequence[str] | None, study: str, alpha: float,
                     n_boot: int) -> Report:
    """A report of one ablation study's tables only, one section per dataset it ran on."""
    sections, known = [], set()
    for name in datasets or registry.datasets():
        runs, _ = dataset_runs(registry, name)
        known |= {study_of(r) for r in runs if is_ablation_run(r)}
        tables = ablation_tables(runs, alpha, n_boot, study=study)
        if tables:
            sections.append(DatasetSection(name, [], ablations=tables))
    if not sections:
        raise UserError(f"No finished run of ablation study {study!r} in the registry at {registry.root}"
                        + (f" for {', '.join(datasets)}" if datasets else "") + ". Studies with finished runs "
                        f"there: {', '.join(sorted(known)) or 'none'}. `rsitr-bench ablate` records one.")
    return Report(sections, alpha, {})
