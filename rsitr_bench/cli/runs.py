"""``rsitr-bench runs``: list, show, compare, remove and import the runs of the registry.

The main CLI adds the commands with :func:`add_runs_commands` and runs them with :func:`run_runs_command`,
passing the registry directory and index URL. Every command but ``import`` only reads the registry or deletes
from it, so none of them creates one: ``runs ls`` on a directory without a registry says there are no runs, the
others refuse. ``import`` merges registries kept apart (one per machine) into this one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rsitr_bench.cli.tables import tabulate
from rsitr_bench.errors import UserError

if TYPE_CHECKING:
    from rsitr_bench.harness.registry import Registry

# The states `runs rm` selects by a flag of the same name; a `running` run is never removed.
_REMOVABLE_STATES = ("failed", "interrupted")


def add_runs_commands(subparsers: argparse._SubParsersAction,
                      parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``runs`` with ``ls``, ``show``, ``compare`` and ``rm``; ``parents`` carry the CLI's common options."""
    parents = list(parents)
    runs = subparsers.add_parser("runs", parents=parents, help="inspect the run registry")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    ls = runs_sub.add_parser("ls", parents=parents, help="list runs")
    ls.add_argument("--method")
    ls.add_argument("--dataset")
    show = runs_sub.add_parser("show", parents=parents, help="show one run's result")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print metrics.json")
    compare = runs_sub.add_parser(
        "compare", parents=parents, help="B − A per metric, with the paired test over the test queries",
        description="Compare two finished runs on the same test split: every R@k of both directions and mR, "
        "their difference B − A, its 95% bootstrap CI and the p-value of the paired sign-flip test over the "
        "test queries (both from the per-query hits in seeds/<seed>/ranks.npz).")
    compare.add_argument("run_a", metavar="A", help="run id (or unambiguous prefix) of the reference run")
    compare.add_argument("run_b", metavar="B", help="run id (or unambiguous prefix) of the run compared with A")
    compare.add_argument("--n-boot", type=int, default=1000, help="resamples of the paired test (default: 1000)")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    rm = runs_sub.add_parser("rm", parents=parents, help="remove runs by id, or every failed/interrupted run")
    rm.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    rm.add_argument("--failed", action="store_true", help="remove every failed run")
    rm.add_argument("--interrupted", action="store_true",
                    help="remove every interrupted run (its process is gone; `run --resume` could continue it)")
    imp = runs_sub.add_parser(
        "import", parents=parents, help="merge other registry directories into this registry",
        description="Copy the runs of each DIR (a registry directory with its index.sqlite) into this registry: "
        "index rows and run directories. Importing again changes nothing; a run id recorded here with different "
        "content is refused and named.")
    imp.add_argument("sources", nargs="+", metavar="DIR", type=Path, help="registry directory to import")


def run_runs_command(args: argparse.Namespace, root: Path, index_url: str | None = None) -> int:
    """Run ``runs ls|show|compare|rm|import`` on the registry at ``root`` (index: ``index_url`` if given);
    return the exit code."""
    from rsitr_bench.harness.registry import NoRegistryError, Registry  # SQLAlchemy: only when a command runs

    if args.runs_command == "import":
        return _import(args, root, index_url)
    try:
        registry = Registry(root, create=False, index_url=index_url)
    except NoRegistryError:
        if args.runs_command != "ls":
            raise
        print(f"no runs in {root}")
        return 0
    commands = {"ls": _ls, "show": _show, "compare": _compare, "rm": _rm}
    return commands[args.runs_command](args, registry)


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _ls(args: argparse.Namespace, registry: Registry) -> int:
    rows = []
    for r in registry.list(args.method, args.dataset):
        mr = "" if r.mr_mean is None else (f"{r.mr_mean:.2f}" + (f" ± {r.mr_std:.2f}" if r.mr_std else ""))
        rows.append([r.id, _fmt_time(r.created), r.effective_status, r.method, r.dataset, r.split, r.seeds, mr])
    if not rows:
        print(f"no runs in {registry.root}")
        return 0
    print(tabulate(rows, headers=["run", "created", "status", "method", "dataset", "split", "seeds", "mR"],
                   disable_numparse=True))
    return 0


def _show(args: argparse.Namespace, registry: Registry) -> int:
    row = registry.get(args.run_id)
    path = registry.run_dir(row.id) / "metrics.json"
    result = json.loads(row.metrics) if row.metrics else {}  # the index: no run directory needed
    if not result and path.is_file():  # a row recorded before its result reached the index
        result = json.loads(path.read_text())
    if not result:
        print(f"run {row.id}: status {row.effective_status}, no result yet "
              f"(continue it with `rsitr-bench run --resume {row.id}`)")
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from rsitr_bench.reports.table import recall_table

        print(f"run {row.id} ({row.effective_status}), directory {registry.run_dir(row.id)}")
        print(recall_table(result))
    return 0


def _compare(args: argparse.Namespace, registry: Registry) -> int:
    from rsitr_bench.reports.compare import compare_runs
    from rsitr_bench.reports.runs import finished_test_run

    a, b = finished_test_run(registry, args.run_a), finished_test_run(registry, args.run_b)
    comparison = compare_runs(a, b, n_boot=args.n_boot)
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
        return 0
    fingerprint = a.fingerprint
    print(f"A  {a.id}  ({a.method})\nB  {b.id}  ({b.method})")
    print(f"test split {a.dataset}/{a.result.get('split')}: fingerprint {str(fingerprint.get('sha256'))[:12]}, "
          f"{fingerprint.get('images')} images, {fingerprint.get('captions')} captions; "
          f"protocol={a.result.get('protocol')}, ties={a.result.get('ties')}\n")
    rows = [[r.metric, f"{r.a:.2f}", f"{r.b:.2f}", f"{r.delta:+.2f}",
             "" if r.ci is None else f"[{r.ci[0]:+.2f}, {r.ci[1]:+.2f}]",
             "" if r.p_value is None else f"{r.p_value:.4f}"] for r in comparison.rows]
    print(tabulate(rows, headers=["metric", "A", "B", "Δ (B − A)", "95% CI of Δ", "p"], disable_numparse=True,
                   colalign=("left", "right", "right", "right", "right", "right")))
    if comparison.reason:
        print(f"\nno paired test: {comparison.reason}")
    else:
        print(f"\nCI: bootstrap over the test queries; p: paired sign-flip test, {comparison.n_boot} resamples "
              f"(p < 0.05: this split separates A and B on that metric)")
    return 0


def _rm(args: argparse.Namespace, registry: Registry) -> int:
    states = [state for state in _REMOVABLE_STATES if getattr(args, state)]
    if states and args.run_ids:
        raise UserError(f"`runs rm` takes run ids or --{' / --'.join(states)}, not both: the flag already "
                        f"selects every {' or '.join(states)} run.")
    if not states and not args.run_ids:
        raise UserError("Nothing to remove: give the run ids to remove, or --failed / --interrupted to remove "
                        "every run in that state. `rsitr-bench runs ls` lists the runs and their status.")
    if args.run_ids:
        for run_id in args.run_ids:
            print(f"removed {registry.remove(run_id)}")
        return 0
    selected = [row for row in registry.list() if row.effective_status in states]
    if not selected:
        print(f"no {' or '.join(states)} runs in {registry.root}: nothing removed")
        return 0
    for row in selected:
        print(f"removed {registry.remove(row.id)} ({row.effective_status})")
    return 0


def _import(args: argparse.Namespace, root: Path, index_url: str | None) -> int:
    """Open every source and check it against this registry before anything is copied: a typo or a
    conflicting run id imports nothing (and creates no registry)."""
    from rsitr_bench.harness.registry import INDEX_NAME, NoRegistryError, Registry, sqlite_index

    sources = []
    for path in args.sources:
        try:
            sources.append(Registry(path, create=False, index_url=sqlite_index(path)))
        except NoRegistryError:
            raise UserError(f"{path} holds no run registry (no {INDEX_NAME} there): give registry directories, "
                            f"the ones passed as --registry when the runs were recorded.") from None
    registry = Registry(root, index_url=index_url)
    for source in sources:
        registry.check_importable(source)
    for source in sources:
        added, present = registry.import_from(source)
        print(f"{source.root}: imported {len(added)} run(s), {len(present)} already here")
    return 0
