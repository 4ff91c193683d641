"""The HTML report in a real browser: headless Chromium loads the page, runs its script, and we read the DOM.

Skipped, with the reason, where no chromium is installed (CI installs Debian's with .ci/install-chromium.sh).
"""

from __future__ import annotations

import html
import json
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


# Appended to a copy of the page: the layout as the browser computed it, read back from the dumped DOM.
_PROBE = """<script>
document.body.setAttribute("data-layout", JSON.stringify({
  viewport: window.innerWidth, page: document.documentElement.scrollWidth,
  leaderboards: Array.prototype.map.call(document.querySelectorAll("table.leaderboard"), function (t) {
    return {scroll: t.parentNode.scrollWidth, visible: t.parentNode.clientWidth}; })}));
</script></body>"""


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium_with_sortable_tables_and_plots(tmp_path):
    chromium = _chromium()
    registry = Registry(tmp_path / "runs")
    fake_run(registry, "strong", 0.6, seeds=(0, 1))
    fake_run(registry, "weak", 0.2)
    # The widest realistic rows: a long method name in two configurations with sampled floats, three seeds
    # (so every cell has a ± std) and the long run ids such a name gives.
    for i, lam in enumerate((0.7742336894342167, 0.31415926535)):
        fake_run(registry, "mps-clip-as-published", 0.4 + 0.05 * i, seeds=(0, 1, 2), rng_offset=i, config={
            "method": {"name": "mps-clip-as-published", "lambda_mpc": lam, "tau": 0.0123456789 * (i + 1),
                       "n_perspectives": 3 + i}, "train": {"lr": 3.3e-5 * (i + 1), "warmup": 0.1 + i / 7}})
    fake_run(registry, "test-selected", 0.9, reasons=("model selection on test (non-compliant)",))
    for trial, quality in enumerate((0.2, 0.5, 0.4)):
        fake_run(registry, "weak", quality, role="val", sha="c" * 64,
                 tags={"study": "demo", "trial": trial, "params": {"train.lr": 10.0 ** -(trial + 3)}})
    report = build_report(registry, build_plugin_host(), n_boot=100)
    (page,) = write_report(report, ["html"], tmp_path / "out")[:1]
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", _PROBE))

    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         probed.resolve().as_uri()],
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

    # At 1280 px nothing scrolls sideways: neither the page nor any leaderboard (whose mR column used to be
    # pushed out of view by long labels). Short labels, wrapped text cells and the std under the mean do it.
    layout = json.loads(html.unescape(re.search(r'data-layout="([^"]*)"', dom).group(1)))
    assert layout["viewport"] == 1280, layout
    assert layout["page"] <= layout["viewport"], layout
    assert len(layout["leaderboards"]) == 2 and all(t["scroll"] <= t["visible"] for t in layout["leaderboards"]), \
        layout
    assert "<li><b>mps-clip-as-published #1</b>: method.lambda_mpc=0.774, method.n_perspectives=3" in dom
