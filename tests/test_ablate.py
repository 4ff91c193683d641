"""``rsitr-bench ablate`` and the ablation table: every row recorded, resumed after an interruption, and reported
against the full method with Δ and the paired test.

The command tests train tiny configurations; the table tests fabricate finished runs (tests/fixtures/runs.py),
so each sets exactly the property under test.
"""

from __future__ import annotations

import json
import re

import pytest

from rsitr_bench.cli.main import main
from rsitr_bench.errors import UserError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.metrics import paired_test
from rsitr_bench.reports.ablation import ablation_tables
from rsitr_bench.reports.compare import per_query_result
from rsitr_bench.reports.model import build_report
from rsitr_bench.reports.output import RENDERERS
from rsitr_bench.reports.runs import finished_test_runs
from rsitr_bench.sweeps.ablation import prepare_ablation
from tests.fixtures.runs import fake_run
from tests.helpers import home_registry

TINY = ["--no-progress", "--set", "dataset.n_train=8", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8",
        "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "eval.bootstrap=0",
        "--set", "method.max_perspectives=2"]
ROWS = ["global", "test-subimages", "g2a", "full", "no-con", "no-tri", "no-mpc", "no-mpt", "perspectives-grid",
        "perspectives-clip-saliency", "perspectives-oracle-boxes"]
STUDY = "mps-clip-synthetic-rs"


@pytest.fixture(scope="module")
def host():
    return build_plugin_host()


# -------------------------------------------------------------------------------------------- the command


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_ablate_records_every_row_resumes_after_an_interruption_and_prints_the_table(capsys, monkeypatch):
    from rsitr_bench.methods.mps_clip.method import MpsClip

    fit = MpsClip.fit

    def interrupted_g2a(self, train, val, ctx):
        if not self.options.mpr:  # the + G²A row: its run exists when fit starts, so Ctrl-C leaves it unfinished
            raise KeyboardInterrupt
        return fit(self, train, val, ctx)

    monkeypatch.setattr(MpsClip, "fit", interrupted_g2a)
    assert main(["ablate", "--method", "mps-clip", *TINY]) == 130
    assert "rerun the same command" in capsys.readouterr().err
    first = {row.tag_dict["row"]: row for row in home_registry().list()}
    assert sorted(first) == ["g2a", "global", "test-subimages"]
    assert first["g2a"].effective_status == "interrupted" and first["global"].status == "finished"
    assert first["global"].tag_dict["evaluation_only"] is True

    monkeypatch.setattr(MpsClip, "fit", fit)
    assert main(["ablate", "--method", "mps-clip", *TINY]) == 0
    out = capsys.readouterr().out
    runs = home_registry().list()
    by_row = {row.tag_dict["row"]: row for row in runs}
    assert len(runs) == len(ROWS) and sorted(by_row) == sorted(ROWS)  # one run per row, none repeated
    assert all(row.status == "finished" and row.tag_dict["ablation"] == STUDY for row in runs)
    assert by_row["g2a"].id == first["g2a"].id and by_row["global"].id == first["global"].id  # resumed, kept
    assert f"finished as run {first['global'].id}" in out and f"continues run {first['g2a'].id}" in out

    full = json.loads(by_row["full"].metrics)
    assert full["compliance"]["compliant"] and full["parameters"]["trainable"] > 0
    oracle = json.loads(by_row["perspectives-oracle-boxes"].metrics)
    assert oracle["oracle_perspectives"] == ["oracle-boxes"] and not oracle["compliance"]["compliant"]
    untrained = json.loads(by_row["test-subimages"].metrics)
    assert untrained["evaluation_only"] and untrained["parameters"]["trainable"] == 0
    assert json.loads(by_row["global"].metrics)["per_seed"]["0"]["guidance_stats"].get("items", 0) == 0

    table = out[out.index("Ablation mps-clip-synthetic-rs"):]
    lines = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| ")}
    default = resolve_config({"method": {"name": "mps-clip"}}, build_plugin_host()).method_options.perspectives
    assert "reference" in lines[f"+ MPR = full method (perspectives: {default})"]
    no_mpc = [cell.strip() for cell in lines["full − L_MPC"].split("|")]
    assert no_mpc[4].lstrip("*").startswith(("+", "-")) and no_mpc[5].startswith("[")  # Δ and its CI
    assert 0 < float(no_mpc[6]) <= 1  # the paired test's p
    assert "UPPER BOUND" in lines["perspectives: oracle-boxes (oracle upper bound)"]

    assert main(["ablate", "--method", "mps-clip", *TINY]) == 0  # a finished study reruns nothing
    assert len(home_registry().list()) == len(ROWS)


def test_the_ladder_follows_the_default_localiser_read_from_the_method(host, tmp_path):
    registry = Registry(tmp_path / "runs")
    default = resolve_config({"method": {"name": "mps-clip"}}, host).method_options.perspectives
    rows = {p.row.name: p for p in prepare_ablation("mps-clip", {}, host, registry).rows}
    assert f"(perspectives: {default})" in rows["full"].row.label
    assert {"perspectives-grid", "perspectives-clip-saliency", "perspectives-oracle-boxes"} \
        - {f"perspectives-{default}"} <= set(rows)
    assert rows["global"].config.method_options.test_fusion == "global" and not rows["global"].row.fit
    assert rows["no-tri"].config.method_options.loss_weights().tri == 0
    grid = prepare_ablation("mps-clip", {"method": {"perspectives": "grid"}}, host, registry).rows
    assert "perspectives-grid" not in {p.row.name for p in grid}  # the full row is the grid row
    assert all(p.config.method_options.perspectives == "grid" for p in grid if p.row.group != "perspectives")


def test_a_subset_of_rows_keeps_each_row_s_place_in_the_table(host, tmp_path):
    registry = Registry(tmp_path / "runs")
    every = {p.row.name: p.order for p in prepare_ablation("mps-clip", {}, host, registry).rows}
    some = prepare_ablation("mps-clip", {}, host, registry, rows=["no-tri", "global"]).rows
    assert [(p.row.name, p.order) for p in some] == [("global", every["global"]), ("no-tri", every["no-tri"])]
    assert every["no-tri"] > every["full"] > every["global"]


def test_a_study_refuses_a_row_recorded_with_another_configuration(host, tmp_path):
    registry = Registry(tmp_path / "runs")
    config = {"method": {"name": "mps-clip", "adapters": False, "mpr": False, "test_fusion": "global"},
              "dataset": {"name": "synthetic-rs"}, "run": {"seeds": [5]}}
    fake_run(registry, "mps-clip", 0.5, config=config, seeds=(5,), tags={"ablation": STUDY, "row": "global"})
    with pytest.raises(UserError, match=r"another configuration \(run.seeds: \[5\] recorded, \[0\] now"):
        prepare_ablation("mps-clip", {}, host, registry)
    planned = prepare_ablation("mps-clip", {}, host, registry, seeds=[5]).rows
    assert planned[0].action == "skip" and all(p.action == "new" for p in planned[1:])
    assert prepare_ablation("mps-clip", {}, host, registry, study="other").rows[0].action == "new"
    with pytest.raises(UserError, match="already holds runs of mps-clip on synthetic-rs"):
        prepare_ablation("mps-clip-head", {}, host, registry, study=STUDY)


@pytest.mark.parametrize("argv,message", [
    (["--method", "global-clip"], "declares no adapters"),
    (["--method", "mps-clip", "--set", "method.test_fusion=global"], "sets method.test_fusion itself"),
    (["--method", "mps-clip", "--rows", "full,everything"], "Unknown ablation row 'everything'"),
    (["--method", "mps-clip", "--seeds", "0,one"], "comma-separated integers"),
])
def test_ablate_refuses_what_it_cannot_run_before_any_run(capsys, argv, message):
    assert main(["ablate", *argv, "--list-rows"]) == 2
    assert message in capsys.readouterr().err.replace("\n  ", " ")
    assert not (home_registry().root / "index.sqlite").exists() or not home_registry().list()


# ---------------------------------------------------------------------------------------------- the table


def _tagged(registry, row, quality, order, seeds=(0, 1), rng_offset=0, **extra):
    run_id = fake_run(registry, "mps-clip", quality, seeds=seeds, rng_offset=rng_offset,
                      tags={"ablation": STUDY, "row": row, "label": f"label of {row}", "group": "ladder",
                            "order": order})
    if extra:  # the result fields the runner writes for oracle and untrained runs
        result = json.loads((registry.run_dir(run_id) / "metrics.json").read_text()) | extra
        registry.finish(run_id, result)
    return run_id


@pytest.fixture
def study(tmp_path):
    registry = Registry(tmp_path / "runs")
    ids = {"global": _tagged(registry, "global", 0.2, 0, rng_offset=7, evaluation_only=True),
           "full": _tagged(registry, "full", 0.6, 3),
           "no-mpc": _tagged(registry, "no-mpc", 0.6, 6, rng_offset=0),
           "oracle": _tagged(registry, "perspectives-oracle-boxes", 0.9, 9, rng_offset=3,
                             oracle_perspectives=["oracle-boxes"],
                             compliance={"compliant": False,
                                         "reasons": ["oracle perspectives (upper bound, not deployable)"]}),
           "other-seeds": _tagged(registry, "no-tri", 0.5, 5, seeds=(3,), rng_offset=1)}
    fake_run(registry, "global-clip", 0.4)  # a leaderboard run beside the study
    return registry, ids


def test_every_row_gets_delta_and_the_seed_paired_test_against_the_full_method(study, host):
    registry, ids = study
    (table,) = ablation_tables(finished_test_runs(registry), n_boot=200)
    assert [line.name for line in table.lines] == ["global", "full", "no-tri", "no-mpc",
                                                   "perspectives-oracle-boxes"]  # in ladder order
    assert table.full.record.id == ids["full"]
    lines = {line.name: line for line in table.lines}
    full = per_query_result(lines["full"].record)
    expected = paired_test(per_query_result(lines["global"].record), full, metric="mR", n_boot=200)
    assert lines["global"].delta == expected["delta"] < 0 and lines["global"].p_value == expected["p_value"]
    assert table.significant(lines["global"]) and lines["global"].ci[1] < 0
    assert lines["no-mpc"].delta == 0 and lines["no-mpc"].p_value == 1 and not table.significant(lines["no-mpc"])
    assert lines["no-tri"].p_value is None and "other seeds" in lines["no-tri"].reason
    assert lines["no-tri"].delta == round(lines["no-tri"].mr["mean"] - lines["full"].mr["mean"], 2)
    assert lines["perspectives-oracle-boxes"].upper_bound and lines["global"].evaluation_only


def test_the_report_shows_the_ablation_apart_from_the_leaderboard_in_every_format(study, host):
    registry, ids = study
    report = build_report(registry, host, with_plots=False, n_boot=200)
    (section,) = report.sections
    assert [row.record.method for table in section.tables for row in table.rows] == ["global-clip"]
    md = RENDERERS["md"](report)
    assert "### Ablation mps-clip-synthetic-rs: mps-clip on synthetic-rs" in md
    assert re.search(r"\| label of full +\| [0-9.]+ ± [0-9.]+ +\| reference +\|", md)
    assert md.count("**UPPER BOUND: oracle perspectives, not deployable**") == 1
    assert "untrained (evaluation only)" in md and "other seeds than the full method" in md
    html = RENDERERS["html"](report)
    assert '<table class="sortable ablation">' in html and '<tr class="upperbound">' in html
    assert ids["full"] in html
    latex = RENDERERS["latex"](report)
    assert r"\label{tab:synthetic-rs-ablation-mps-clip-synthetic-rs}" in latex and r"$^{\dagger}$" in latex
    data = json.loads(RENDERERS["json"](report))["datasets"][0]["ablations"][0]
    assert data["full_run"] == ids["full"] and {r["row"] for r in data["rows"]} >= {"global", "no-mpc"}


def test_report_ablation_shows_one_study_and_names_the_known_ones(study, host):
    registry, _ = study
    only = build_report(registry, host, ablation=STUDY, n_boot=200)
    (section,) = only.sections
    assert section.tables == [] and [t.study for t in section.ablations] == [STUDY]
    with pytest.raises(UserError, match=f"Studies with finished runs there: {STUDY}"):
        build_report(registry, host, ablation="nope")


def test_without_the_full_row_the_table_says_why_there_is_no_delta(tmp_path):
    registry = Registry(tmp_path / "runs")
    _tagged(registry, "global", 0.2, 0)
    (table,) = ablation_tables(finished_test_runs(registry))
    assert table.full is None and table.lines[0].delta is None
    assert "full method's row has not finished" in table.notes[0]
