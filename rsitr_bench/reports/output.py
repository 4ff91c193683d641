"""Writing a report: every requested format from the same :class:`~rsitr_bench.reports.model.Report`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rsitr_bench.harness.atomic import write_bytes_atomic, write_text_atomic
from rsitr_bench.reports import render_csv, render_html, render_json, render_latex, render_md
from rsitr_bench.reports.model import Report

RENDERERS: dict[str, Callable[[Report], str]] = {
    "md": render_md.render,
    "latex": render_latex.render,
    "csv": render_csv.render,
    "json": render_json.render,
    "html": render_html.render,
}
FILE_NAMES = {"md": "report.md", "latex": "report.tex", "csv": "leaderboard.csv", "json": "report.json",
              "html": "report.html"}
FORMATS = tuple(RENDERERS)


def write_report(report: Report, formats: Sequence[str], out_dir: Path) -> list[Path]:
    """Write each format to its file under ``out_dir`` and the plots to ``out_dir/plots`` (removing PNGs
    there that this report no longer has); return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / FILE_NAMES[fmt]
        write_text_atomic(path, RENDERERS[fmt](report))
        written.append(path)
    plots = [p for section in report.sections for p in section.plots]
    plot_dir = out_dir / "plots"
    if plots:
        plot_dir.mkdir(exist_ok=True)
    for plot in plots:
        path = plot_dir / f"{plot.name}.png"
        write_bytes_atomic(path, plot.png)
        written.append(path)
    # A regenerated report must not keep showing figures of runs that are gone.
    for stale in set(plot_dir.glob("*.png")) - set(written) if plot_dir.is_dir() else ():
        stale.unlink()
    return written
