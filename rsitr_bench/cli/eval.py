"""The ``eval`` and ``leaderboard`` commands: argument parsing and printing; the work is in
:mod:`rsitr_bench.harness.evaluation`.

Nothing heavy is imported when the parser is built, so ``rsitr-bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from rsitr_bench.errors import UserError
from rsitr_bench.harness.plugins import PluginHost
from rsitr_bench.harness.registry import Registry


def add_eval_commands(subparsers: Any, parents: Sequence[argparse.ArgumentParser],
                      add_run_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``eval`` (flags shared with ``run``) and ``leaderboard`` to the sub-command parser."""
    ev = subparsers.add_parser(
        "eval", parents=list(parents), help="score a method or checkpoint on the test split without training",
        description="Evaluation only: nothing is trained and neither train nor val is loaded. The run is "
                    "recorded like any other and reports rank it. With --preset, a named evaluation "
                    "(weights, data and protocol rows) runs end to end, downloading what is missing.")
    add_run_flags(ev)
    ev.add_argument("--checkpoint", help="weights to score: a catalog name (`rsitr-bench list pretrained`), "
                                         "hf://OWNER/REPO/FILE[@REV], a URL or a local file")
    ev.add_argument("--preset", help="a named evaluation, e.g. mps-clip-released-rsitmd "
                                     "(`rsitr-bench eval --list-presets`)")
    ev.add_argument("--list-presets", action="store_true", help="list the evaluation presets and exit")

    board = subparsers.add_parser(
        "leaderboard", parents=list(parents), help="zero-shot grid: models × datasets, one report",
        description="Scores every model on every dataset's test split without training (global-clip by "
                    "default) and writes one report of the results.")
    add = board.add_argument
    add("--models", required=True,
        help="comma-separated catalog names or open_clip MODEL/TAG pairs, e.g. "
             "remoteclip-vit-b-32,georsclip-vit-b-32,ViT-B-32/openai")
    add("--datasets", default="rsicd,rsitmd,ucm,sydney,nwpu", help="comma-separated datasets (default: all five)")
    add("--data-dir", type=Path, help="folder with one sub-folder per dataset (default: fetch each dataset's "
                                      "default package into $RSITR_BENCH_HOME/data)")
    add("--method", default="global-clip", help="the zero-shot method to score (default global-clip)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add("--device", help="auto, cpu, cuda, cuda:1 or mps")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--out", type=Path, metavar="DIR", help="write the report (md, html, csv, json) here")


def _print_results(results: list[Any]) -> None:
    rows = []
    for r in results:
        metrics = r.outcome.metrics
        mr = metrics["summary"]["mR"]
        compliance = metrics["compliance"]
        rows.append([r.label, f"{mr['mean']:.2f}", "" if r.published_mr is None else f"{r.published_mr:.2f}",
                     metrics["leakage_audit"].get("status", ""),
                     "yes" if compliance["compliant"] else "no: " + "; ".join(compliance["reasons"]),
                     r.outcome.run_id])
    print(tabulate(rows, headers=["row", "mR", "published mR", "leakage audit", "compliant", "run"],
                   disable_numparse=True))


def run_eval_command(args: argparse.Namespace, host: PluginHost, registry: Registry,
                     tree: Callable[[], dict[str, Any]]) -> int:
    """``rsitr-bench eval``: one configured evaluation, or every row of a named preset."""
    from rsitr_bench.harness import evaluation as ev
    from rsitr_bench.reports.table import recall_table

    if args.list_presets:
        rows = [[p.name, p.checkpoint, p.dataset, p.data_package,
                 "" if p.published_mr is None else f"{p.published_mr:.2f}", p.description]
                for p in ev.load_eval_presets().values()]
        print(tabulate(rows, headers=["preset", "checkpoint", "dataset", "data package", "published mR",
                                      "description"], disable_numparse=True))
        return 0
    base = tree()
    if args.preset:
        if args.method:
            raise UserError("--preset chooses the methods itself; drop --method (use --set to adjust a row).")
        root = Path(args.data_root).expanduser() if args.data_root else None
        base.get("data", {}).pop("root", None)
        results = ev.run_eval_preset(args.preset, host, registry, root, base)
        _print_results(results)
        print(f"\nside by side with the registry's other runs: rsitr-bench report --dataset "
              f"{results[0].outcome.metrics['dataset']}")
        return 0
    if not args.method:
        raise UserError("eval needs --method (see `rsitr-bench list methods`) or --preset "
                        "(see `rsitr-bench eval --list-presets`).")
    outcome = ev.evaluate_tree(base, host, registry)
    print(recall_table(outcome.metrics))
    print(f"\nrecorded as run {outcome.run_id} in {outcome.run_dir}")
    return 0


def run_leaderboard_command(args: argparse.Namespace, host: PluginHost, registry: Registry,
                            tree: dict[str, Any]) -> int:
    """``rsitr-bench leaderboard``: the zero-shot grid, then one report over the datasets it covered."""
    from rsitr_bench.harness import evaluation as ev
    from rsitr_bench.reports.model import build_report
    from rsitr_bench.reports.output import RENDERERS, write_report

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    results = ev.run_grid(models, datasets, host, registry, tree, args.data_dir, args.method)
    _print_results(results)
    report = build_report(registry, host, datasets, with_plots=args.out is not None)
    if args.out is None:
        print()
        print(RENDERERS["md"](report))
        return 0
    for path in write_report(report, ["md", "html", "csv", "json"], args.out):
        print(f"wrote {path}")
    return 0
