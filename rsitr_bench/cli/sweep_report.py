"""The ``sweep`` and ``report`` commands: argument parsing and printing only; the work is in
:mod:`rsitr_bench.sweeps.study` and :mod:`rsitr_bench.reports`.

``rsitr_bench.cli.main`` wires them in with :func:`add_sweep_report_commands` and dispatches to
:func:`run_sweep_command` / :func:`run_report_command` with its plugin host and registry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsitr_bench.cli.flags import add_config_flags, config_flag_values
from rsitr_bench.cli.tables import tabulate
from rsitr_bench.errors import UserError

if TYPE_CHECKING:
    from rsitr_bench.harness.plugins import PluginHost
    from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.defaults import DEFAULT_DATASET


def add_sweep_report_commands(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``sweep`` and ``report`` to the ``rsitr-bench`` sub-command parser.

    Nothing heavy is imported here (the sweep machinery pulls in torch): building the parser must stay as
    cheap as ``rsitr-bench --help``. Pruner and format names are checked when the command runs.
    """
    sweep = subparsers.add_parser(
        "sweep", parents=list(parents), help="tune a method's hyperparameters on validation mR (Optuna)",
        description="Each trial is a registered validation-only run; the test split is never scored by a "
                    "trial. Several workers (processes, GPUs, machines) share one study through --storage.")
    add_config_flags(sweep, method_required=True)
    add = sweep.add_argument
    add("--n-trials", type=int, default=20,
        help="trials this worker runs; with several workers the study gets the sum; 0 only exports (and "
             "with --final-seeds tests) the study's best trial (default 20)")
    add("--study", help="study name (default: METHOD-DATASET); workers join a study by its name")
    add("--storage", help="where the study lives: an RDB URL (postgresql://user:pw@host/db, "
                          "sqlite:///file.db) or journal:PATH (default: an SQLite file in the registry)")
    add("--pruner", default="median", help="median (default), hyperband, wilcoxon or none: stops unpromising "
                                           "trials early from their per-epoch validation mR")
    add("--search-space", type=Path, metavar="FILE",
        help="YAML narrowing or extending the declared space: KEY: {type, low, high, log, step, choices}, "
             "a partial mapping to narrow, or null to drop a parameter")
    add("--trial-seed", type=int, default=0, help="the seed every trial runs (default 0)")
    add("--sampler-seed", type=int, help="seed of the TPE sampler (reproducible single-worker sweeps)")
    add("--timeout", type=float, help="start no new trial after this many seconds")
    add("--final-seeds", help="then run the best configuration once on test with these seeds, e.g. 0,1,2")
    add("--export", type=Path, metavar="PATH",
        help="write the best configuration here (default: REGISTRY/presets/STUDY.yaml)")
    add("--gpus", help="start one worker per listed GPU of this machine (CUDA_VISIBLE_DEVICES), each "
                       "running --n-trials; needs a shared --storage")
    add("--heartbeat", type=int, default=60,
        help="RDB storages: seconds between worker heartbeats; a trial silent for twice this long is failed "
             "and re-queued (default 60)")
    add("--max-retry", type=int, default=1,
        help="re-queue a failed or stale trial at most this often, with the same parameters (default 1)")

    report = subparsers.add_parser(
        "report", parents=list(parents), help="leaderboards, published comparisons and plots of the registry",
        description="Finished test runs only. One table per test-split fingerprint; non-compliant runs "
                    "stamped and never ranked; published rows with recomputed mR and Δ.")
    add = report.add_argument
    add("--dataset", action="append",
        help="dataset to report (repeatable; default: every dataset with finished runs)")
    add("--format", default="md", help="md, latex, csv, json, html, all, or a comma-separated list "
                                       "(default md)")
    add("--out", type=Path, metavar="DIR",
        help="write the files (and plots/*.png) here; without it, one format goes to stdout")
    add("--published", type=Path, metavar="FILE",
        help="published-results YAML (default: the curated file shipped with rsitr-bench)")
    add("--no-published", action="store_true", help="leave published results out")
    add("--alpha", type=float, default=0.05,
        help="significance level of the paired test against the best run (default 0.05)")
    add("--n-boot", type=int, default=1000, help="permutations of the paired test (default 1000)")
    add("--no-plots", action="store_true", help="skip the figures")
    add("--ablation", metavar="STUDY", help="only the table of this ablation study (`rsitr-bench ablate`)")


# ----------------------------------------------------------------------------------------------------- sweep


def _base_tree(args: argparse.Namespace) -> dict[str, Any]:
    from rsitr_bench.harness.config import assemble_tree

    return assemble_tree(args.config, config_flag_values(args), args.overrides)


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--final-seeds expects comma-separated integers such as 0,1,2, "
                        f"got {text!r}.") from None


def _request(args: argparse.Namespace) -> Any:
    from rsitr_bench.sweeps.search_space import load_space_file
    from rsitr_bench.sweeps.study import SweepRequest

    tree = _base_tree(args)
    dataset = args.dataset or (tree.get("dataset") or {}).get("name") or DEFAULT_DATASET
    return SweepRequest(
        method=args.method, dataset=dataset, base_tree=tree, n_trials=args.n_trials, study_name=args.study,
        storage=args.storage, pruner=args.pruner,
        search_space=load_space_file(args.search_space) if args.search_space else None,
        trial_seed=args.trial_seed, sampler_seed=args.sampler_seed, timeout=args.timeout,
        final_seeds=_seeds(args.final_seeds), export=args.export, heartbeat_s=args.heartbeat,
        max_retry=args.max_retry)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one ``--gpus`` worker: this sweep's trial options, minus what the parent does
    once for all workers (launching, exporting, the final test run). Workers get no sampler seed: workers
    drawing from one seed would propose the same start-up trials."""
    argv = ["sweep", "--method", args.method, "--n-trials", str(args.n_trials), "--pruner", args.pruner,
            "--trial-seed", str(args.trial_seed), "--heartbeat", str(args.heartbeat),
            "--max-retry", str(args.max_retry), "--storage", args.storage]
    options = {"--dataset": args.dataset, "--data-root": args.data_root, "--config": args.config,
               "--study": args.study, "--search-space": args.search_space, "--timeout": args.timeout,
               "--device": args.device, "--registry": args.registry, "--registry-index": args.registry_index}
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    for text in args.overrides:
        argv += ["--set", text]
    for name in args.no_plugin:
        argv += ["--no-plugin", name]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def _print_outcome(outcome: Any) -> None:
    from rsitr_bench.reports.table import recall_table
    from rsitr_bench.sweeps.search_space import format_params

    rows = [[t.number, t.state, "" if t.value is None else f"{t.value:.2f}",
             format_params(t.params),
             t.run_id or ""] for t in outcome.trials]
    print(f"\nstudy {outcome.study_name!r} in {outcome.storage}")
    print(tabulate(rows, headers=["trial", "state", "val mR", "params", "run"], disable_numparse=True))
    if outcome.best is None:
        print("no trial has completed yet: no best configuration to export")
        return
    print(f"\nbest: trial {outcome.best.number}, validation mR {outcome.best.value:.2f}")
    print(f"best configuration written to {outcome.preset} (rsitr-bench run --config {outcome.preset})")
    if outcome.final_metrics:
        print("\nfinal evaluation on test:")
        print(recall_table(outcome.final_metrics))
        print(f"\nrecorded as run {outcome.final_run_id}")


def run_sweep_command(args: argparse.Namespace, host: PluginHost, registry: Registry) -> int:
    """``rsitr-bench sweep``: run (or launch) the workers of one study, then export and optionally test."""
    from rsitr_bench.sweeps import study as sw

    request = _request(args)
    if args.gpus:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not args.storage:
            raise UserError("--gpus starts several workers, which need a shared study storage: pass "
                            "--storage journal:PATH (one machine or NFS) or --storage postgresql://... .")
        prepared = sw.prepare_sweep(request, host, registry)  # checks everything, creates the study once
        code = sw.launch_workers(worker_argv(args), gpus)
        if code:
            print(f"error: a sweep worker exited with status {code}; the study keeps every finished trial",
                  file=sys.stderr)
        _print_outcome(sw.conclude(prepared))
        return code
    prepared = sw.prepare_sweep(request, host, registry)
    print(f"study {prepared.name!r} in {prepared.storage}: {request.n_trials} trial(s) on this worker, "
          f"pruner {request.pruner}, objective = validation mR; searching {', '.join(prepared.space)}")
    try:
        sw.run_trials(prepared)
    except KeyboardInterrupt:
        print(f"interrupted: study {prepared.name!r} keeps every finished trial; `{sw.continue_command(prepared)}` "
              f"continues it", file=sys.stderr)
        return 130
    _print_outcome(sw.conclude(prepared))
    return 0


# ---------------------------------------------------------------------------------------------------- report


def _formats(text: str) -> list[str]:
    from rsitr_bench.reports.output import FORMATS

    wanted = list(FORMATS) if text == "all" else [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise UserError(f"Unknown report format {(unknown or [text])[0]!r}; choose from "
                        f"{', '.join(FORMATS)}, all, or a comma-separated list.")
    return wanted


def run_report_command(args: argparse.Namespace, host: PluginHost, registry: Registry) -> int:
    """``rsitr-bench report``: render the registry's finished test runs in the requested formats."""
    from rsitr_bench.reports.model import build_report
    from rsitr_bench.reports.output import RENDERERS, write_report

    formats = _formats(args.format)
    if args.out is None and len(formats) > 1:
        raise UserError("Several formats need --out DIR (one file each); without --out, give one --format.")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}.")
    with_plots = not args.no_plots and (args.out is not None or formats == ["html"])
    report = build_report(registry, host, args.dataset, args.published, not args.no_published, args.alpha,
                          args.n_boot, with_plots, ablation=args.ablation)
    if args.out is None:
        sys.stdout.write(RENDERERS[formats[0]](report))
        return 0
    for path in write_report(report, formats, args.out):
        print(f"wrote {path}")
    return 0
