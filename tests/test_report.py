"""Reports: published-row checks, compliance stamps, fingerprint separation, ties, and every output format.

Most tests fabricate finished runs directly in a registry (the runner's metrics.json schema plus per-seed
ranks), which keeps them fast and lets each one set exactly the property under test.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pytest

from rsitr_bench.cli.main import _common
from rsitr_bench.cli.sweep_report import add_sweep_report_commands, run_report_command
from rsitr_bench.errors import UserError
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.reports.model import build_report
from rsitr_bench.reports.output import RENDERERS
from rsitr_bench.reports.published import load_published
from tests.fixtures.runs import SHA_A, SHA_B, fake_run


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "runs")


@pytest.fixture(scope="module")
def host():
    return build_plugin_host()


def _report(registry, host, **kw):
    kw.setdefault("with_plots", False)
    kw.setdefault("n_boot", 200)
    return build_report(registry, host, **kw)


# ------------------------------------------------------------------------------------------------ published


def test_the_curated_table_flags_exactly_the_known_mismatches():
    table = load_published()
    flagged = {(d, r.method) for d, ds in table.datasets.items() for r in ds.rows if r.mR_mismatch}
    assert flagged == {("rsicd", "CLIP-CL"), ("rsitmd", "DOVE"),
                       ("rsitmd", "UniAdapter (as printed by MPSP)")}
    dove = next(r for r in table.datasets["rsitmd"].rows if r.method == "DOVE")
    assert round(dove.mR_recomputed, 2) == 38.86 and dove.mR == 37.73
    assert (table.datasets["rsicd"].images, table.datasets["rsicd"].captions) == (1093, 5465)
    for ds in table.datasets.values():
        for row in ds.rows:
            assert row.sources and all(s in table.sources for s in row.sources), row


PUBLISHED = """
sources: {P: a paper, Q: another paper}
datasets:
  synthetic-rs:
    test_split: {images: 40, captions: 200}
    rows:
      - {method: Wrong mean, backbone: X, setting: s, i2t: [10, 20, 30], t2i: [10, 20, 30], mR: 25.0,
         source: [P]}
      - {method: Rounded, backbone: X, setting: s, i2t: [10.01, 20.01, 30.01], t2i: [10, 20, 30], mR: 20.01,
         source: [Q]}
      - {method: Good baseline, backbone: X, setting: s, i2t: [1, 2, 3], t2i: [4, 5, 6], mR: 3.5, source: [Q],
         match: {method: good}}
"""


def test_a_published_row_whose_mr_is_not_the_mean_is_flagged_everywhere(tmp_path, registry, host):
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED)
    fake_run(registry, "good", 0.5)
    report = _report(registry, host, published_path=path)
    rows = {c.published.method: c for c in report.sections[0].comparisons}
    wrong = rows["Wrong mean"].published
    assert wrong.mR_mismatch and round(wrong.mR_recomputed, 2) == 20
    assert not rows["Rounded"].published.mR_mismatch  # 20.005 printed as 20.01: rounding, not an error
    good = rows["Good baseline"]
    assert good.row is not None and good.deltas["mR"] == round(good.row.mean("mR") - 3.5, 2)

    md = RENDERERS["md"](report)
    wrong_line = next(line for line in md.splitlines() if line.startswith("| Wrong mean"))
    assert "⚠ mismatch" in wrong_line and "20.00" in wrong_line
    assert "⚠" not in next(line for line in md.splitlines() if line.startswith("| Rounded"))
    assert "mismatch: mean of recalls 20.00" in RENDERERS["latex"](report)
    assert 'class="flag">⚠ mismatch' in RENDERERS["html"](report)
    published = [r for r in csv.DictReader(io.StringIO(RENDERERS["csv"](report))) if r["kind"] == "published"]
    assert {r["label"]: r["mR_mismatch"] for r in published}["Wrong mean"] == "True"
    data = json.loads(RENDERERS["json"](report))
    assert [r["mR_mismatch"] for r in data["datasets"][0]["published"]["rows"]] == [True, False, False]


def test_published_rows_are_not_compared_with_a_split_of_another_size(tmp_path, registry, host):
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED)
    fake_run(registry, "good", 0.5, images=10, captions=50)
    section = _report(registry, host, published_path=path).sections[0]
    assert all(c.row is None for c in section.comparisons)
    assert "40 images, 200 captions" in section.published_note


# ----------------------------------------------------------------------------------------- comparability


def test_non_compliant_runs_are_stamped_and_never_ranked(registry, host):
    fake_run(registry, "honest", 0.3)
    fake_run(registry, "test-selected", 0.9, reasons=("model selection on test (non-compliant)",))
    fake_run(registry, "leaky", 0.8, reasons=("leakage audit: fail",))
    report = _report(registry, host)
    (table,) = report.sections[0].tables
    assert [r.label for r in table.ranked] == ["honest"] and table.ranked[0].rank == 1
    assert {r.label for r in table.unranked} == {"test-selected", "leaky"}
    assert all(r.rank is None for r in table.unranked)
    assert table.ranked[0].marks["mR"] == "best"  # best among compliant runs, despite lower mR

    md = RENDERERS["md"](report)
    assert "**NON-COMPLIANT: model selection on test (non-compliant)**" in md
    assert "**NON-COMPLIANT: leakage audit: fail**" in md
    latex = RENDERERS["latex"](report)
    assert latex.count(r"\textsc{non-compliant}") == 2 and "not ranked" in latex
    html = RENDERERS["html"](report)
    assert html.count('<span class="stamp">NON-COMPLIANT</span>') == 2
    rows = list(csv.DictReader(io.StringIO(RENDERERS["csv"](report))))
    assert {r["label"]: (r["rank"], r["compliant"]) for r in rows} == {
        "honest": ("1", "True"), "test-selected": ("", "False"), "leaky": ("", "False")}


def test_runs_on_different_fingerprints_never_share_a_table(registry, host):
    fake_run(registry, "m", 0.5, sha=SHA_A)
    fake_run(registry, "m", 0.5, sha=SHA_B)
    fake_run(registry, "n", 0.4, sha=SHA_B)
    fake_run(registry, "n", 0.4, sha=SHA_B, protocol="string-dedup")
    section = _report(registry, host).sections[0]
    assert len(section.tables) == 3
    keys = [(t.fingerprint["sha256"], t.protocol, sorted(r.label for r in t.rows)) for t in section.tables]
    assert sorted(keys) == [(SHA_A, "instance", ["m"]), (SHA_B, "instance", ["m", "n"]),
                            (SHA_B, "string-dedup", ["n"])]
    assert any("3 different test splits" in note and "never compared" in note for note in section.notes)
    md = RENDERERS["md"](_report(registry, host))
    assert md.count("### Table") == 3
    assert "fingerprint aaaaaaaaaaaa" in md and "fingerprint bbbbbbbbbbbb" in md


def test_paired_test_marks_runs_the_data_cannot_separate_from_the_best(registry, host):
    fake_run(registry, "best", 0.6, rng_offset=1)
    fake_run(registry, "twin", 0.6, rng_offset=1, config={"method": {"name": "twin"}})
    fake_run(registry, "weak", 0.05, rng_offset=2)
    (table,) = _report(registry, host).sections[0].tables
    by_label = {r.label: r for r in table.ranked}
    assert by_label["twin"].verdict.separable is False and by_label["twin"].comparison.startswith("≈ best")
    assert by_label["weak"].verdict.separable is True and by_label["weak"].verdict.p_value < 0.05
    assert table.ranked[0].comparison == "best"


def test_repeats_of_a_configuration_show_the_newest_and_same_method_variants_are_labelled(registry, host):
    old = fake_run(registry, "m", 0.5, config={"method": {"name": "m", "k": 2}})
    new = fake_run(registry, "m", 0.5, config={"method": {"name": "m", "k": 2}, "run": {"seeds": [3]}})
    fake_run(registry, "m", 0.4, config={"method": {"name": "m", "k": 4}})
    (table,) = _report(registry, host).sections[0].tables
    assert table.superseded == [old]
    assert sorted(r.label for r in table.rows) == ["m #1", "m #2"]
    assert table.legend == [("m #1", "method.k=2"), ("m #2", "method.k=4")]
    assert new in {r.record.id for r in table.rows}


def _variants(registry) -> None:
    """Two configurations of one method that differ in five keys, with the long floats a sweep samples."""
    for i, lam in enumerate((0.7742336894342167, 0.31415926535)):
        fake_run(registry, "mps-clip", 0.4 + 0.1 * i, rng_offset=i, config={
            "method": {"name": "mps-clip", "lambda_mpc": lam, "tau": 0.0123456789 * (i + 1), "k": 3 + i,
                       "keywords": "clip-vocabulary"},
            "train": {"lr": 3.3e-5 * (i + 1), "epochs": 35}, "dataset": {"name": "synthetic-rs"}})
    fake_run(registry, "global-clip", 0.3)


def test_variant_labels_are_short_and_the_legend_names_every_differing_key(registry, host):
    _variants(registry)
    (table,) = _report(registry, host).sections[0].tables
    assert [r.label for r in table.ranked] == ["mps-clip #2", "mps-clip #1", "global-clip"]
    expected = [("mps-clip #1", "method.k=3, method.lambda_mpc=0.774, method.tau=0.0123, train.lr=3.3e-05"),
                ("mps-clip #2", "method.k=4, method.lambda_mpc=0.314, method.tau=0.0247, train.lr=6.6e-05")]
    assert table.legend == expected
    report = _report(registry, host)

    md = RENDERERS["md"](report)
    assert "| mps-clip #1 |" in md.replace("  ", " ") and "0.7742336894342167" not in md
    assert f"- **mps-clip #1**: {expected[0][1]}" in md
    latex = RENDERERS["latex"](report)
    assert r"\textit{mps-clip \#2}: method.k=4, method.lambda\_mpc=0.314" in latex
    assert any(line.startswith(r"mps-clip \#1 &") for line in latex.splitlines())
    page = RENDERERS["html"](report)
    assert f"<li><b>mps-clip #2</b>: {expected[1][1]}</li>" in page
    assert f'<span title="{expected[0][1]}">mps-clip #1</span>' in page
    rows = {r["label"]: r for r in csv.DictReader(io.StringIO(RENDERERS["csv"](report)))}
    assert rows["mps-clip #1"]["configuration"] == expected[0][1] and rows["global-clip"]["configuration"] == ""
    data = json.loads(RENDERERS["json"](report))["datasets"][0]["tables"][0]
    assert data["legend"] == dict(expected)
    raw = {r["label"]: r["configuration"] for r in data["ranked"]}
    assert raw["mps-clip #1"]["method.lambda_mpc"] == 0.7742336894342167 and raw["global-clip"] == {}


@pytest.mark.slow
def test_sweep_trials_feed_the_sweep_summary_not_the_leaderboard(registry, host):
    fake_run(registry, "m", 0.5)
    for trial, quality in enumerate((0.2, 0.6, 0.4)):
        fake_run(registry, "m", quality, role="val", sha=SHA_B,
                 tags={"study": "s1", "trial": trial, "params": {"train.lr": 10.0 ** -(trial + 3),
                                                                 "method.k": trial % 2}})
    section = _report(registry, host, with_plots=True).sections[0]
    assert [r.record.method for t in section.tables for r in t.rows] == ["m"]
    (study,) = section.studies
    assert study.best["number"] == 1 and study.counts == {"finished": 3}
    assert set(study.importances) == {"train.lr", "method.k"}
    names = {p.name for p in section.plots}
    assert {"synthetic-rs-sweep-s1-history", "synthetic-rs-sweep-s1-importances"} <= names


# ----------------------------------------------------------------------------------------------- formats


def test_latex_uses_booktabs_bold_for_best_and_underline_for_second(registry, host):
    fake_run(registry, "first", 0.7)
    fake_run(registry, "second", 0.4)
    fake_run(registry, "third", 0.1)
    latex = RENDERERS["latex"](_report(registry, host))
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}"):
        assert rule in latex
    first = next(line for line in latex.splitlines() if line.startswith("first &"))
    second = next(line for line in latex.splitlines() if line.startswith("second &"))
    assert first.count(r"\textbf{") >= 7 and second.count(r"\underline{") >= 7
    assert r"\underline" not in next(line for line in latex.splitlines() if line.startswith("third &"))


def _cli(argv: list[str], registry_dir: Path) -> int:
    common = _common()
    parser = argparse.ArgumentParser(parents=[common])
    add_sweep_report_commands(parser.add_subparsers(dest="command"), [common])
    args = parser.parse_args([*argv, "--registry", str(registry_dir)])
    return run_report_command(args, build_plugin_host(), Registry(registry_dir))


@pytest.mark.slow
def test_every_format_from_the_same_registry(tmp_path, registry, capsys):
    fake_run(registry, "a", 0.6, seeds=(0, 1, 2))
    fake_run(registry, "b", 0.3, seeds=(0, 1, 2))
    out = tmp_path / "report"
    argv = ["report", "--dataset", "synthetic-rs", "--format", "all", "--out", str(out)]
    assert _cli(argv, registry.root) == 0
    for name in ("report.md", "report.tex", "leaderboard.csv", "report.json", "report.html"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "synthetic-rs-table1-recall-at-k.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "± " in md and "(plots/synthetic-rs-table1-recall-at-k.png)" in md and "1.2k" in md
    data = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in data["datasets"][0]["tables"][0]["ranked"]] == ["a", "b"]
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert rows[0]["n_seeds"] == "3" and float(rows[0]["mR_std"]) >= 0 and rows[0]["wall_time_s"] == "12.5"

    capsys.readouterr()
    for fmt in ("md", "latex", "csv", "json", "html"):
        assert _cli(["report", "--format", fmt], registry.root) == 0
        assert capsys.readouterr().out.strip()
    with pytest.raises(UserError, match="Several formats need --out"):
        _cli(["report", "--format", "md,csv"], registry.root)
    with pytest.raises(UserError, match="Unknown report format 'pdf'"):
        _cli(["report", "--format", "pdf", "--out", str(out)], registry.root)


def test_a_report_for_a_dataset_without_runs_says_so(registry, host):
    with pytest.raises(UserError, match="holds no finished runs"):
        _report(registry, host)
    fake_run(registry, "m", 0.5)
    with pytest.raises(UserError, match=r"No finished runs of dataset 'rsicd'.*synthetic-rs"):
        _report(registry, host, datasets=["rsicd"])


@pytest.mark.slow
def test_a_real_run_gets_recall_curves_and_per_scene_class_recall(tmp_path, host):
    from rsitr_bench.harness import runner
    from rsitr_bench.harness.config import resolve_config

    registry = Registry(tmp_path / "runs")
    tree = {"method": {"name": "global-clip"}, "dataset": {"name": "synthetic-rs", "n_train": 8, "n_val": 8,
                                                           "n_test": 12}, "run": {"progress": False}}
    runner.execute(resolve_config(tree, host), host, registry)
    section = build_report(registry, host, n_boot=100).sections[0]
    names = {p.name for p in section.plots}
    assert names == {"synthetic-rs-table1-recall-at-k", "synthetic-rs-table1-per-class"}, section.notes
    assert section.published is None  # nothing is published for the embedded dataset
