"""LaTeX rendering: booktabs tables, best in bold and second underlined, ready to ``\\input`` into a paper.

Numbers go from the registry to the paper without anyone retyping them, which is the point: transcription
is where published tables pick up their errors. Needs ``\\usepackage{booktabs}`` only.
"""

from __future__ import annotations

from rsitr_bench.reports import fmt
from rsitr_bench.reports.ablation import AblationTable
from rsitr_bench.reports.leaderboard import Row, Table
from rsitr_bench.reports.model import DatasetSection, Report

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "±": r"$\pm$", "≈": r"$\approx$", "→": r"$\to$", "Δ": r"$\Delta$", "²": r"$^2$", "α": r"$\alpha$",
            "—": "--", "−": "$-$", "⚠": r"\textbf{!}"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def _metric(row: Row, key: str) -> str:
    text = escape(fmt.mean_std(row.stats.get(key)))
    mark = row.marks.get(key)
    return rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}" if mark == "second" else text


def _head(table: Table, extra: list[str]) -> list[str]:
    n = len(table.ks)
    cols = "l" + "r" * (2 * n + 1) + "r" * len(extra)
    ks = " & ".join(f"R@{k}" for k in table.ks)
    return [
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        rf" & \multicolumn{{{n}}}{{c}}{{Image$\to$Text}} & \multicolumn{{{n}}}{{c}}{{Text$\to$Image}} & "
        + " & " * len(extra) + r"\\",
        rf"\cmidrule(lr){{2-{n + 1}}}\cmidrule(lr){{{n + 2}-{2 * n + 1}}}",
        rf"Method & {ks} & {ks} & mR & " + " & ".join(extra) + r" \\",
        r"\midrule",
    ]


def _configurations(rows: list[Row]) -> str:
    """The legend of the numbered labels, for the caption (a caption wraps; a table column would not)."""
    entries = [f"\\textit{{{escape(row.label)}}}: {escape(row.legend)}" for row in rows if row.distinct]
    return f" {escape(fmt.CONFIGURATIONS)} " + "; ".join(entries) + "." if entries else ""


def _table(dataset: str, index: int, table: Table, ranked: bool, alpha: float) -> list[str]:
    rows = table.ranked if ranked else table.unranked
    extra = ["Params", "Time"] + ([] if ranked else ["Stamp"])
    lines = [r"\begin{table}[t]", r"\centering", r"\small"] + _head(table, extra)
    for row in rows:
        name = escape(row.label)
        if ranked and row.verdict is not None and row.verdict.separable is False:
            name += r"$^{\approx}$"
        cells = [name] + [_metric(row, k) for k in table.metrics] + [escape(fmt.params(row.trainable)),
                                                                     escape(fmt.duration(row.wall_time_s))]
        if not ranked:
            cells.append(r"\textsc{non-compliant}: " + escape("; ".join(row.record.reasons)))
        lines.append(" & ".join(cells) + r" \\")
    what = ("Best in bold, second underlined; $^{\\approx}$: not separable from the best by a paired test "
            f"over test queries ($\\alpha = {alpha}$)." if ranked else
            "NON-COMPLIANT runs (model selected on test or failed leakage audit): not ranked and not "
            "comparable with the compliant table.")
    caption = (f"{escape(dataset)}: {escape(table.title)}. Mean $\\pm$ std over seeds, percent. {what}"
               + _configurations(rows))
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              rf"\label{{tab:{escape(dataset)}-{index}{'' if ranked else '-noncompliant'}}}",
              r"\end{table}", ""]
    return lines


def _published(section: DatasetSection) -> list[str]:
    pub = section.published
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{lll" + "r" * 8 + "l}",
             r"\toprule",
             r"Method & Backbone & Source & \multicolumn{3}{c}{Image$\to$Text} & "
             r"\multicolumn{3}{c}{Text$\to$Image} & mR & $\Delta$ mR & Check \\",
             r"\cmidrule(lr){4-6}\cmidrule(lr){7-9}",
             r" & & & R@1 & R@5 & R@10 & R@1 & R@5 & R@10 & & & \\", r"\midrule"]
    for c in section.comparisons:
        p = c.published
        recalls = [fmt.number(v) for v in (p.recalls or (None,) * 6)]
        check = f"mismatch: mean of recalls {p.mR_recomputed:.2f}" if p.mR_mismatch else ""
        delta = fmt.signed(c.deltas.get("mR")) if c.row else ""
        cells = [p.method, p.backbone, ", ".join(p.sources), *recalls,
                 ("≈" if p.mR_approx else "") + fmt.number(p.mR), delta, check]
        lines.append(" & ".join(escape(x) for x in cells) + r" \\")
    caption = (f"Published results on {escape(section.dataset)} ({pub.images} test images). mR recomputed "
               f"from the six recalls; \\emph{{mismatch}} marks a printed mR that is not their mean beyond "
               f"rounding. $\\Delta$ mR: reproduced here minus published. {escape(section.published_note)}")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              rf"\label{{tab:{escape(section.dataset)}-published}}", r"\end{table}", ""]
    return lines


def _ablation(dataset: str, table: AblationTable) -> list[str]:
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{lrrrr}", r"\toprule",
             r"Configuration & mR & $\Delta$ mR & 95\,\% CI of $\Delta$ & $p$ \\", r"\midrule"]
    group = None
    for line in table.lines:
        if group is not None and line.group != group:
            lines.append(r"\midrule")
        group = line.group
        reference = line is table.full
        delta = "--" if reference else escape(fmt.signed(line.delta))
        if table.significant(line):
            delta = rf"\textbf{{{delta}}}"
        name = escape(line.label) + (r"$^{\dagger}$" if line.upper_bound else "") + \
            (r"$^{\circ}$" if line.evaluation_only else "")
        cells = [name, escape(fmt.mean_std(line.mr)), delta, "" if reference else escape(fmt.interval(line.ci)),
                 "" if reference else escape(fmt.p_value(line.p_value))]
        lines.append(" & ".join(cells) + r" \\")
    caption = (f"{escape(table.title)}. Test mR, mean $\\pm$ std over seeds, percent; $\\Delta$ against the full "
               f"method, in bold when a paired sign-flip test over the test queries gives $p < {table.alpha}$. "
               f"$^{{\\circ}}$: untrained (evaluation only). $^{{\\dagger}}$: upper bound from ground-truth boxes, "
               f"not deployable.")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              rf"\label{{tab:{escape(dataset)}-ablation-{escape(table.study)}}}", r"\end{table}", ""]
    return lines


def render(report: Report) -> str:
    out = [f"% Generated by rsitr-bench {report.version} (`rsitr-bench report --format latex`).",
           "% Do not edit by hand: regenerate it from the run registry. Requires \\usepackage{booktabs}.", ""]
    for section in report.sections:
        for i, table in enumerate(section.tables, 1):
            if table.ranked:
                out += _table(section.dataset, i, table, True, report.alpha)
            if table.unranked:
                out += _table(section.dataset, i, table, False, report.alpha)
        for ablation in section.ablations:
            out += _ablation(section.dataset, ablation)
        if section.published is not None:
            out += _published(section)
    return "\n".join(out)
