"""Markdown rendering (GitHub tables): the README and pull-request view of a report."""

from __future__ import annotations

from tabulate import tabulate

from rsitr_bench.reports import fmt
from rsitr_bench.reports.ablation import AblationTable
from rsitr_bench.reports.leaderboard import Row, Table
from rsitr_bench.reports.model import DatasetSection, Report
from rsitr_bench.reports.published import FLAG


def _metric(row: Row, key: str) -> str:
    text = fmt.mean_std(row.stats.get(key))
    mark = row.marks.get(key)
    return f"**{text}**" if mark == "best" else f"_{text}_" if mark == "second" else text


def _headers(table: Table) -> list[str]:
    return [" ".join(filter(None, fmt.metric_header(k))) for k in table.metrics]


def _table(table: Table, ranked: bool) -> str:
    rows = []
    for row in table.ranked if ranked else table.unranked:
        first = [str(row.rank)] if ranked else []
        last = [row.comparison] if ranked else [f"**{row.stamp}**"]
        rows.append(first + [row.label] + [_metric(row, k) for k in table.metrics] +
                    [str(row.n_seeds), fmt.params(row.trainable), fmt.duration(row.wall_time_s)] + last +
                    [f"`{row.record.id}`"])
    headers = (["#"] if ranked else []) + ["method", *_headers(table), "seeds", "trainable params",
                                           "wall time", "vs best" if ranked else "stamp", "run"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _published(section: DatasetSection) -> str:
    rows = []
    for c in section.comparisons:
        p = c.published
        recalls = [fmt.number(v) for v in (p.recalls or (None,) * 6)]
        printed = ("≈" if p.mR_approx else "") + fmt.number(p.mR) + (f" ± {p.mR_std:.2f}" if p.mR_std else "")
        check = f"{FLAG} mismatch" if p.mR_mismatch else \
            ("ok" if p.mR_recomputed is not None and p.mR is not None else "")
        reproduced = "" if c.row is None else f"{c.row.label}: {fmt.number(c.row.mean('mR'))}" + \
            ("" if c.row.compliant else " (NON-COMPLIANT)")
        name = p.method + (" (reproduction)" if p.reproduction else "")
        rows.append([name, p.backbone, p.setting, *recalls, printed, fmt.number(p.mR_recomputed), check,
                     ", ".join(p.sources), reproduced, fmt.signed(c.deltas.get("mR")) if c.row else ""])
    headers = ["method", "backbone", "setting", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5",
               "t2i R@10", "mR (printed)", "mR (recomputed)", "check", "source", "reproduced here", "Δ mR"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def ablation_table(table: AblationTable) -> str:
    """One ablation study as a GitHub table: every row against the full method (also printed by ``ablate``)."""
    rows = []
    for line in table.lines:
        reference = line is table.full
        delta = "reference" if reference else fmt.signed(line.delta)
        if table.significant(line):
            delta = f"**{delta}**"
        notes = [f"**{m}**" if m.startswith(("UPPER", "NON-")) else m for m in line.marks]
        if line.reason:
            notes.append(line.reason)
        rows.append([line.group, line.label, fmt.mean_std(line.mr), delta,
                     "" if reference else fmt.interval(line.ci), "" if reference else fmt.p_value(line.p_value),
                     str(line.n_seeds), fmt.params(line.trainable), "; ".join(notes), f"`{line.record.id}`"])
    headers = ["part", "row", "mR", "Δ mR", "95 % CI of Δ", "p", "seeds", "trainable params", "notes", "run"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _ablations(section: DatasetSection) -> list[str]:
    out = []
    for table in section.ablations:
        out += [f"### {table.title}", "", ablation_table(table), ""]
        out += [f"- {note}" for note in table.notes] + ([""] if table.notes else [])
    return out


def render(report: Report) -> str:
    """The whole report as one Markdown document (plots referenced as ``plots/<name>.png``)."""
    out = ["# rsitr-bench report", "", fmt.LEGEND.format(second="in italics", alpha=report.alpha), ""]
    if any(section.ablations for section in report.sections):
        out += [fmt.ABLATION_LEGEND.format(alpha=report.alpha), ""]
    for section in report.sections:
        out += [f"## {section.dataset}", ""]
        for i, table in enumerate(section.tables, 1):
            out += [f"### Table {i}: {table.title}", ""]
            if table.ranked:
                out += [_table(table, ranked=True), ""]
            if table.unranked:
                out += ["**Non-compliant runs (stamped, not ranked):**", "", _table(table, ranked=False), ""]
            if table.legend:
                out += [fmt.CONFIGURATIONS, ""] + [f"- **{label}**: {text}" for label, text in table.legend] + [""]
            if table.superseded:
                out += [f"Older repeats of a shown configuration: {', '.join(table.superseded)}.", ""]
        out += _ablations(section)
        if section.published is not None:
            pub = section.published
            out += [f"### Published results ({pub.images} test images, {pub.captions} captions)", ""]
            if section.published_note:
                out += [section.published_note, ""]
            out += [_published(section), ""]
        for study in section.studies:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(study.counts.items()))
            line = f"- Sweep `{study.name}`: {len(study.trials)} trials ({counts})"
            if study.best_text:
                line += f"; {study.best_text}"
            out += ["### Sweeps", ""] if study is section.studies[0] else []
            out += [line]
        out += [""] if section.studies else []
        for plot in section.plots:
            out += [f"![{plot.title}](plots/{plot.name}.png)", "", f"*{plot.caption}*", ""]
        if section.notes:
            out += ["Notes:", ""] + [f"- {note}" for note in section.notes] + [""]
    return "\n".join(out).rstrip() + "\n"
