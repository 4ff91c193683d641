"""The ``ablate`` command: argument parsing and printing; the work is in :mod:`rsitr_bench.sweeps.ablation`.

``rsitr_bench.cli.main`` wires it in with :func:`add_ablate_command` and dispatches to
:func:`run_ablate_command` with its plugin host and registry. Nothing heavy is imported to build the parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rsitr_bench.cli.flags import add_config_flags, comma_list, config_flag_values
from rsitr_bench.errors import UserError

if TYPE_CHECKING:
    from rsitr_bench.harness.plugins import PluginHost
    from rsitr_bench.harness.registry import Registry
    from rsitr_bench.sweeps.ablation import Ablation, PlannedRow, RowOutcome


def add_ablate_command(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``ablate`` to the ``rsitr-bench`` sub-command parser."""
    ablate = subparsers.add_parser(
        "ablate", parents=list(parents), help="run an ablation study: the method built up and taken apart, "
                                              "one recorded run per row",
        description="Runs the MPS-CLIP ablation ladder (global embedding, + sub-images at test, + G²A, + MPR = "
                    "full; full minus each loss term; other perspective localisers, the oracle as an upper "
                    "bound), each row one recorded run with every seed, then prints the table against the full "
                    "method. Rerunning the same command skips finished rows and continues interrupted ones.")
    add_config_flags(ablate, method_required=True)
    add = ablate.add_argument
    add("--seeds", help="comma-separated seeds of every row, e.g. 0,1,2 (default: the configuration's)")
    add("--study", help="study name, the runs' tag (default: METHOD-DATASET); a rerun continues it")
    add("--rows", help="run only these rows (comma-separated names, see --list-rows); default: all")
    add("--list-rows", action="store_true", help="print the study's rows and what each would do, and exit")
    add("--alpha", type=float, default=0.05, help="significance level of the paired tests (default 0.05)")
    add("--n-boot", type=int, default=1000, help="permutations of the paired tests (default 1000)")


def _seeds(text: str | None) -> list[int] | None:
    try:
        return [int(s) for s in comma_list(text)] or None
    except ValueError:
        raise UserError(f"--seeds expects comma-separated integers such as 0,1,2, got {text!r}.") from None


def _plan_line(planned: PlannedRow) -> str:
    kind = "train" if planned.row.fit else "eval"
    what = {"skip": f"finished as run {planned.run_id}", "resume": f"continues run {planned.run_id}",
            "new": "new run"}[planned.action]
    options = ", ".join(f"{k}={v}" for k, v in planned.row.options.items()) or "the method's defaults"
    return f"{planned.row.name:<26} {kind:<5} {options}: {what}"


def _print_plan(ablation: Ablation) -> None:
    print(f"ablation study {ablation.study!r}: {ablation.method} on {ablation.dataset}, seeds "
          f"{ablation.rows[0].config.run.seeds}, {len(ablation.rows)} rows")
    for planned in ablation.rows:
        print("  " + _plan_line(planned))


def run_ablate_command(args: argparse.Namespace, host: PluginHost, registry: Registry) -> int:
    """``rsitr-bench ablate``: plan the study, run what is not finished, print the table."""
    from rsitr_bench.harness.config import assemble_tree
    from rsitr_bench.sweeps import ablation as ab

    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}.")
    flags = [(args.dataset, ["dataset", "name"]), *config_flag_values(args)]
    tree = assemble_tree(args.config, flags, args.overrides)
    ablation = ab.prepare_ablation(args.method, tree, host, registry, seeds=_seeds(args.seeds), study=args.study,
                                   rows=comma_list(args.rows) or None)
    _print_plan(ablation)
    if args.list_rows:
        return 0
    total = len(ablation.rows)

    def started(planned: PlannedRow) -> None:
        if planned.action != "skip":
            verb = "continuing" if planned.action == "resume" else "running"
            print(f"\n[{planned.order + 1}/{total}] {verb} row {planned.row.name}: {planned.row.label}", flush=True)

    def done(outcome: RowOutcome) -> None:
        if outcome.status == "finished":
            print(f"row {outcome.planned.row.name}: test mR {outcome.mr:.2f} (run {outcome.run_id})", flush=True)
        elif outcome.status == "failed":
            log = f"; its log: {registry.run_dir(outcome.run_id) / 'run.log'}" if outcome.run_id else ""
            print(f"error: row {outcome.planned.row.name} failed: {outcome.error}{log}", file=sys.stderr)

    try:
        outcomes = ab.run_ablation(ablation, started, done)
    except KeyboardInterrupt:
        print(f"interrupted: the finished rows of study {ablation.study!r} are kept; rerun the same command to "
              f"continue it", file=sys.stderr)
        return 130
    _print_table(registry, ablation, args.alpha, args.n_boot)
    failed = [o.planned.row.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"\n{len(failed)} row(s) failed: {', '.join(failed)}; rerun the same command to continue them",
              file=sys.stderr)
        return 1
    return 0


def _print_table(registry: Registry, ablation: Ablation, alpha: float, n_boot: int) -> None:
    from rsitr_bench.reports.ablation import ablation_tables
    from rsitr_bench.reports.fmt import ABLATION_LEGEND
    from rsitr_bench.reports.render_md import ablation_table
    from rsitr_bench.reports.runs import finished_test_runs

    tables = ablation_tables(finished_test_runs(registry, ablation.dataset), alpha, n_boot,
                            study=ablation.study)
    for table in tables:
        print(f"\n{table.title}\n")
        print(ablation_table(table))
        for note in table.notes:
            print(f"- {note}")
    print(f"\n{ABLATION_LEGEND.format(alpha=alpha)}")
    print(f"\nThe table again, or in other formats: rsitr-bench report --ablation {ablation.study} "
          f"[--format md,html,latex,json --out DIR]")
