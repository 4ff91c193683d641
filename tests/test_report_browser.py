"""The HTML report in a real browser: headless Chromium loads the page, runs its script, and we read the DOM.

Skipped, with the reason, where no chromium is installed (CI installs Debian's with .ci/install-chromium.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.reports.model import build_report
from rsitr_bench.reports.output import write_report
from tests.fixtures.runs import fake_run


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed, so the HTML report cannot be checked in a browser; install "
                    "it with .ci/install-chromium.sh (Debian's chromium package)")
    return path


def test_html_report_renders_in_headless_chromium_with_sortable_tables_and_plots(tmp_path):
    chromium = _chromium()
    registry = Registry(tmp_path / "runs")
    fake_run(registry, "strong", 0.6, seeds=(0, 1))
    fake_run(registry, "weak", 0.2)
    fake_run(registry, "test-selected", 0.9, reasons=("model selection on test (non-compliant)",))
    for trial, quality in enumerate((0.2, 0.5, 0.4)):
        fake_run(registry, "weak", quality, role="val", sha="c" * 64,
                 tags={"study": "demo", "trial": trial, "params": {"train.lr": 10.0 ** -(trial + 3)}})
    report = build_report(registry, build_plugin_host(), n_boot=100)
    (page,) = write_report(report, ["html"], tmp_path / "out")[:1]

    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "<table" in dom, f"chromium returned no DOM (exit {result.returncode}): {result.stderr[-2000:]}"

    assert re.search(r'<table class="sortable leaderboard"[^>]*data-sort-ready="true"', dom), \
        "the inline script did not run: tables were not made sortable"
    assert dom.count('<button type="button" class="sort"') >= 10
    assert '<span class="stamp">NON-COMPLIANT</span>' in dom
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', dom)
    titles = {title for title, _ in images}
    assert {"Recall@K curves", "Optimisation history (demo)"} <= titles, titles
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # no CDN, no network
