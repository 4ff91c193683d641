"""HTML rendering: one static, self-contained page (sortable tables, plots embedded as PNG data URIs).

No CDN, no external file, no network: the page must open from a laptop, a CI artefact or an air-gapped
cluster the same way. Sorting is a few lines of inline JavaScript; every sortable cell carries its raw value
in ``data-value`` so ``12.34 ± 0.56`` sorts by 12.34.
"""

from __future__ import annotations

import base64
from html import escape

from rsitr_bench.reports import fmt
from rsitr_bench.reports.ablation import AblationTable
from rsitr_bench.reports.leaderboard import Row, Table
from rsitr_bench.reports.model import DatasetSection, Report
from rsitr_bench.reports.published import FLAG

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
.scroll{overflow-x:auto;margin:.6em 0 1.4em}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:.25em .45em;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.text{text-align:left}
th,td.text{white-space:normal}
.sd{display:block;font-size:.8em;color:#555}
ul.configs{font-size:.9em;overflow-wrap:anywhere}
thead th{border-bottom:2px solid #444}
button.sort{font:inherit;font-weight:600;background:none;border:0;cursor:pointer;padding:0}
th[aria-sort=ascending] button.sort::after{content:" ▲"}
th[aria-sort=descending] button.sort::after{content:" ▼"}
.best{font-weight:700}.second{text-decoration:underline}
.stamp{color:#fff;background:#b00020;border-radius:3px;padding:0 .4em;font-weight:700;font-size:.85em}
tr.noncompliant td,tr.upperbound td{background:#fff4f4}
.flag{color:#b00020;font-weight:700}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption,.legend,.note{color:#555;font-size:.9em}
"""

# Sort a table by the clicked column: numbers by data-value, text otherwise; a second click reverses.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead button.sort").forEach(function (button) {
    button.addEventListener("click", function () {
      var th = button.closest("th"), col = Array.prototype.indexOf.call(th.parentNode.children, th);
      var dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
      th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-value");
        return v !== null && v !== "" && !isNaN(v) ? parseFloat(v) : cell.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), c = x < y ? -1 : x > y ? 1 : 0;
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  table.setAttribute("data-sort-ready", "true");
});
"""


def _th(label: str) -> str:
    text = escape(label)
    return f'<th><button type="button" class="sort" title="sort by {text}">{text}</button></th>'


def _sortable(kind: str, heads: list[str], body: list[str]) -> str:
    head = "".join(_th(h) for h in heads)
    return (f'<div class="scroll"><table class="sortable {kind}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _td(text: str, value: float | int | str | None = None, cls: str = "") -> str:
    attrs = f' data-value="{escape(str(value))}"' if value is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{text}</td>"


def _metric_td(row: Row, key: str) -> str:
    mark = row.marks.get(key, "")
    mean, pm, std = fmt.mean_std(row.stats.get(key)).partition(" ± ")
    return _td(escape(mean) + (f'<span class="sd">± {escape(std)}</span>' if pm else ""), row.mean(key), mark)


def _leaderboard(table: Table, ranked: bool) -> str:
    heads = (["#"] if ranked else []) + ["method"] + \
        [" ".join(filter(None, fmt.metric_header(k))) for k in table.metrics] + \
        ["seeds", "trainable params", "wall time", "vs best" if ranked else "stamp", "run"]
    body = []
    for row in table.ranked if ranked else table.unranked:
        cells = [_td(str(row.rank), row.rank)] if ranked else []
        label = escape(row.label)
        cells.append(_td(f'<span title="{escape(row.legend)}">{label}</span>' if row.distinct else label,
                         cls="text"))
        cells += [_metric_td(row, k) for k in table.metrics]
        cells += [_td(str(row.n_seeds), row.n_seeds), _td(fmt.params(row.trainable), row.trainable),
                  _td(fmt.duration(row.wall_time_s), row.wall_time_s)]
        if ranked:
            p = row.verdict.p_value if row.verdict else None
            cells.append(_td(escape(row.comparison), 1.0 if row.rank == 1 else p, "text"))
        else:
            reasons = escape("; ".join(row.record.reasons))
            cells.append(_td(f'<span class="stamp">NON-COMPLIANT</span> {reasons}', cls="text"))
        cells.append(_td(f"<code>{escape(row.record.id)}</code>", cls="text"))
        kind = "compliant" if row.compliant else "noncompliant"
        body.append(f'<tr class="{kind}">' + "".join(cells) + "</tr>")
    return _sortable("leaderboard" if ranked else "leaderboard noncompliant", heads, body)


def _ablation(table: AblationTable) -> str:
    heads = ["part", "row", "mR", "Δ mR", "95 % CI of Δ", "p", "seeds", "trainable params", "notes", "run"]
    body = []
    for line in table.lines:
        reference = line is table.full
        mean, pm, std = fmt.mean_std(line.mr).partition(" ± ")
        delta = "reference" if reference else fmt.signed(line.delta)
        notes = [f'<span class="stamp">{escape(m)}</span>' if m.startswith(("UPPER", "NON-")) else escape(m)
                 for m in line.marks] + ([escape(line.reason)] if line.reason else [])
        cells = [_td(escape(line.group), cls="text"), _td(escape(line.label), cls="text"),
                 _td(escape(mean) + (f'<span class="sd">± {escape(std)}</span>' if pm else ""), line.mr["mean"]),
                 _td(escape(delta), None if reference else line.delta,
                     "best" if table.significant(line) else ""),
                 _td("" if reference else escape(fmt.interval(line.ci)), cls="text"),
                 _td("" if reference else fmt.p_value(line.p_value), line.p_value),
                 _td(str(line.n_seeds), line.n_seeds), _td(fmt.params(line.trainable), line.trainable),
                 _td("; ".join(notes), cls="text"), _td(f"<code>{escape(line.record.id)}</code>", cls="text")]
        kind = "upperbound" if line.upper_bound else "compliant" if line.record.compliant else "noncompliant"
        body.append(f'<tr class="{kind}">' + "".join(cells) + "</tr>")
    return _sortable("ablation", heads, body)


def _published(section: DatasetSection) -> str:
    heads = ["method", "backbone", "setting", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5",
             "t2i R@10", "mR (printed)", "mR (recomputed)", "check", "source", "reproduced here", "Δ mR"]
    body = []
    for c in section.comparisons:
        p = c.published
        recalls = p.recalls or (None,) * 6
        check = f'<span class="flag">{FLAG} mismatch</span>' if p.mR_mismatch else \
            ("ok" if p.mR_recomputed is not None and p.mR is not None else "")
        reproduced = "" if c.row is None else escape(f"{c.row.label}: {fmt.number(c.row.mean('mR'))}") + \
            ("" if c.row.compliant else ' <span class="stamp">NON-COMPLIANT</span>')
        cells = [_td(escape(p.method + (" (reproduction)" if p.reproduction else "")), cls="text"),
                 _td(escape(p.backbone), cls="text"), _td(escape(p.setting), cls="text")]
        cells += [_td(fmt.number(v), v) for v in recalls]
        cells += [_td(("≈" if p.mR_approx else "") + fmt.number(p.mR), p.mR),
                  _td(fmt.number(p.mR_recomputed), p.mR_recomputed), _td(check, cls="text"),
                  _td(escape(", ".join(p.sources)), cls="text"), _td(reproduced, cls="text"),
                  _td(fmt.signed(c.deltas.get("mR")) if c.row else "", c.deltas.get("mR"))]
        body.append(f'<tr class="{"flagged" if p.mR_mismatch else "published"}">' + "".join(cells) + "</tr>")
    return _sortable("published", heads, body)


def _section(section: DatasetSection) -> list[str]:
    out = [f'<section class="dataset" id="{escape(section.dataset)}"><h2>{escape(section.dataset)}</h2>']
    for i, table in enumerate(section.tables, 1):
        out.append(f"<h3>Table {i}: {escape(table.title)}</h3>")
        if table.ranked:
            out.append(_leaderboard(table, ranked=True))
        if table.unranked:
            out += ["<h4>Non-compliant runs (stamped, not ranked)</h4>", _leaderboard(table, ranked=False)]
        if table.legend:
            entries = "".join(f"<li><b>{escape(label)}</b>: {escape(text)}</li>" for label, text in table.legend)
            out.append(f'<p class="legend">{escape(fmt.CONFIGURATIONS)}</p><ul class="configs">{entries}</ul>')
        if table.superseded:
            out.append(f'<p class="note">Older repeats not shown: {escape(", ".join(table.superseded))}.</p>')
    for ablation in section.ablations:
        out += [f"<h3>{escape(ablation.title)}</h3>", _ablation(ablation)]
        if ablation.notes:
            out.append('<ul class="note">' + "".join(f"<li>{escape(n)}</li>" for n in ablation.notes) + "</ul>")
    if section.published is not None:
        pub = section.published
        out.append(f"<h3>Published results ({pub.images} test images, {pub.captions} captions)</h3>")
        if section.published_note:
            out.append(f'<p class="note">{escape(section.published_note)}</p>')
        out.append(_published(section))
    if section.studies:
        out.append("<h3>Sweeps</h3><ul>")
        for study in section.studies:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(study.counts.items()))
            text = f"<code>{escape(study.name)}</code>: {len(study.trials)} trials ({escape(counts)})"
            if study.best_text:
                text += escape(f"; {study.best_text}")
            out.append(f"<li>{text}</li>")
        out.append("</ul>")
    for plot in section.plots:
        data = base64.b64encode(plot.png).decode("ascii")
        out.append(f'<figure class="plot" id="{escape(plot.name)}"><img alt="{escape(plot.title)}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{escape(plot.caption)}</figcaption></figure>')
    if section.notes:
        out.append('<ul class="note">' + "".join(f"<li>{escape(n)}</li>" for n in section.notes) + "</ul>")
    out.append("</section>")
    return out


def render(report: Report) -> str:
    legend = escape(fmt.LEGEND.format(second="underlined", alpha=report.alpha))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>rsitr-bench report</title><style>{_STYLE}</style></head><body>",
             f"<h1>rsitr-bench report</h1><p class=\"legend\">{legend} Click a column header to sort.</p>"]
    if any(section.ablations for section in report.sections):
        parts.append(f'<p class="legend">{escape(fmt.ABLATION_LEGEND.format(alpha=report.alpha))}</p>')
    for section in report.sections:
        parts += _section(section)
    footer = f"Generated by rsitr-bench {escape(report.version)} from the run registry."
    parts += [f'<footer class="note">{footer}</footer>', f"<script>{_SCRIPT}</script></body></html>"]
    return "\n".join(parts) + "\n"
