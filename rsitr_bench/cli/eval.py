"""The ``eval`` and ``leaderboard`` commands: argument parsing and printing; the work is in
:mod:`rsitr_bench.harness.evaluation`.

Nothing heavy is imported when the parser is built, so ``rsitr-bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsitr_bench.cli.flags import add_output_flag, comma_list
from rsitr_bench.cli.results import check_outputs, print_results, results_table, write_outputs
from rsitr_bench.cli.tables import tabulate
from rsitr_bench.errors import UserError

if TYPE_CHECKING:
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
    add_output_flag(board)


def run_configured(args: argparse.Namespace, host: PluginHost, registry: Registry, tree: dict[str, Any],
                   fit: bool) -> list[Any]:
    """The runs ``run`` (``fit=True``) or ``eval`` (``fit=False``) is asked for: one, or a model × dataset grid.

    ``--model`` always goes through the grid's entry rules (catalog names, MODEL/TAG, hf-hub:, bare models), so
    one model and a list of them mean the same; ``--pretrained`` is the weights of the bare ones (an entry
    that names its own weights keeps them). ``--dataset`` becomes a grid axis only as a list (or with
    ``--data-dir``), so a single dataset keeps ``--data-root`` and the configuration's own data root.
    """
    from rsitr_bench.harness import evaluation as ev

    models = comma_list(args.model) or None
    datasets = comma_list(args.dataset)
    axis = datasets if len(datasets) > 1 or args.data_dir is not None else None
    if axis and args.data_root:
        raise UserError("--data-root names one dataset's folder; for several datasets use --data-dir DIR, a "
                        "folder holding DIR/<dataset> for each of them.")
    if args.data_dir is not None and not axis:
        raise UserError("--data-dir holds one sub-folder per dataset: name them with --dataset a,b (for one "
                        "dataset's folder use --data-root).")
    return ev.run_grid(models, axis, host, registry, tree, args.data_dir, fit=fit)


def run_eval_command(args: argparse.Namespace, host: PluginHost, registry: Registry,
                     tree: Callable[[], dict[str, Any]]) -> int:
    """``rsitr-bench eval``: one configured evaluation, or every row of a named preset."""
    from rsitr_bench.harness import evaluation as ev

    if args.list_presets:
        rows = [[p.name, p.checkpoint, p.dataset, p.data_package,
                 "" if p.published_mr is None else f"{p.published_mr:.2f}", p.description]
                for p in ev.load_eval_presets().values()]
        print(tabulate(rows, headers=["preset", "checkpoint", "dataset", "data package", "published mR",
                                      "description"], disable_numparse=True))
        return 0
    check_outputs(args.output)
    base = tree()
    if args.preset:
        if args.method:
            raise UserError("--preset chooses the methods itself; drop --method (use --set to adjust a row).")
        root = Path(args.data_root).expanduser() if args.data_root else None
        base.get("data", {}).pop("root", None)
        print_results(ev.run_eval_preset(args.preset, host, registry, root, base), args.output)
        return 0
    if not args.method:
        raise UserError("eval needs --method (see `rsitr-bench list methods`) or --preset "
                        "(see `rsitr-bench eval --list-presets`).")
    print_results(run_configured(args, host, registry, base, fit=False), args.output)
    return 0


def run_leaderboard_command(args: argparse.Namespace, host: PluginHost, registry: Registry,
                            tree: dict[str, Any]) -> int:
    """``rsitr-bench leaderboard``: the zero-shot grid, then one report over the datasets it covered."""
    from rsitr_bench.harness import evaluation as ev
    from rsitr_bench.reports.model import build_report
    from rsitr_bench.reports.output import RENDERERS, write_report

    check_outputs(args.output)
    models, datasets = comma_list(args.models), comma_list(args.datasets)
    results = ev.run_grid(models, datasets, host, registry, tree, args.data_dir, args.method)
    print(results_table(results))
    for path in write_outputs(args.output, results):
        print(f"wrote {path}")
    report = build_report(registry, host, datasets, with_plots=args.out is not None)
    if args.out is None:
        print()
        print(RENDERERS["md"](report))
        return 0
    for path in write_report(report, ["md", "html", "csv", "json"], args.out):
        print(f"wrote {path}")
    return 0
