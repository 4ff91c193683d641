"""The ``rsitr-bench`` command line: a thin layer over the library API.

Every user-facing failure (unknown names, bad config, missing files, bad checkpoints, unwritable
directories) is a :class:`rsitr_bench.errors.UserError`, printed as one paragraph with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from rsitr_bench import __version__
from rsitr_bench.config import assemble_tree, build_section, resolve_config
from rsitr_bench.errors import UserError
from rsitr_bench.paths import registry_dir
from rsitr_bench.plugins import KINDS, PluginHost, build_plugin_host
from rsitr_bench.registry import Registry


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-plugin", action="append", default=[], metavar="NAME",
                        help="do not load the plugin NAME (repeatable); see `rsitr-bench list plugins`")
    common.add_argument("--registry", type=Path, default=None,
                        help="run registry directory (default: $RSITR_BENCH_HOME/runs)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="rsitr-bench", parents=[common],
                                     description="Benchmark harness for remote-sensing image-text retrieval.")
    parser.add_argument("--version", action="version", version=f"rsitr-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run a method on a dataset and record the result")
    run.add_argument("--method", help="method name (see `rsitr-bench list methods`)")
    run.add_argument("--dataset", help="dataset name (default: the embedded synthetic-rs)")
    run.add_argument("--data-root", help="directory holding the dataset")
    run.add_argument("--format", dest="data_format",
                     help="force an annotation format (karpathy, finetune, precomp, csv, coco, nwpu-json, lines)")
    run.add_argument("--config", type=Path, help="YAML run configuration")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="dotted override, e.g. --set train.lr=4e-5 (repeatable)")
    run.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (mean ± std over them)")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:1 or mps")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its last finished stage")

    lister = sub.add_parser("list", parents=[common], help="list registered plugins")
    lister.add_argument("what", nargs="?", default="all", choices=["all", "plugins", *KINDS])

    runs = sub.add_parser("runs", parents=[common], help="inspect the run registry")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    ls = runs_sub.add_parser("ls", parents=[common], help="list runs")
    ls.add_argument("--method")
    ls.add_argument("--dataset")
    show = runs_sub.add_parser("show", parents=[common], help="show one run's result")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print metrics.json")
    rm = runs_sub.add_parser("rm", parents=[common], help="remove runs")
    rm.add_argument("run_ids", nargs="+")

    from rsitr_bench.cli_data import add_data_commands
    from rsitr_bench.cli_guidance import add_guidance_commands
    from rsitr_bench.cli_sweep_report import add_sweep_report_commands

    add_data_commands(sub, parents=[common])
    add_guidance_commands(sub, parents=[common])
    add_sweep_report_commands(sub, parents=[common])
    return parser


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(args.registry or registry_dir())


def _host(args: argparse.Namespace) -> PluginHost:
    host = build_plugin_host(blocked=args.no_plugin)
    for failure in host.failures:
        print(f"warning: plugin {failure.name!r} (distribution {failure.distribution}) was skipped: "
              f"{failure.stage} failed with {failure.error}", file=sys.stderr)
    return host


def cmd_run(args: argparse.Namespace) -> int:
    from rsitr_bench import runner
    from rsitr_bench.reports.table import recall_table

    host = _host(args)
    registry = _registry(args)
    if args.resume:
        config = runner.load_run_config(registry, args.resume, host)
    else:
        flags = [(args.method, ["method", "name"]), (args.dataset, ["dataset", "name"]),
                 (args.data_root, ["data", "root"]), (args.data_format, ["dataset", "format"]),
                 (args.seeds, ["run", "seeds"]), (args.device, ["run", "device"]),
                 (False if args.no_progress else None, ["run", "progress"])]
        tree = assemble_tree(args.config, flags, args.overrides)
        config = resolve_config(tree, host)
    outcome = runner.execute(config, host, registry, resume_id=args.resume)
    print(recall_table(outcome.metrics))
    print(f"\nrecorded as run {outcome.run_id} in {outcome.run_dir}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    host = _host(args)
    if args.what in ("all", "plugins"):
        rows = [[p.name, p.distribution, p.version, p.module] for p in host.plugins]
        print(tabulate(rows, headers=["plugin", "distribution", "version", "module"]))
        for f in host.failures:
            print(f"(skipped) {f.name} [{f.distribution}]: {f.stage}: {f.error}")
        if args.what == "plugins":
            return 0
        print()
    kinds = list(KINDS) if args.what == "all" else [args.what]
    for kind in kinds:
        rows = [[name, reg.plugin.distribution, reg.plugin.version, reg.spec.description]
                for name, reg in sorted(host.tables[kind].items())]
        print(tabulate(rows, headers=[KINDS[kind][1], "distribution", "version", "description"]))
        print()
    return 0


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def cmd_runs(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.runs_command == "ls":
        rows = []
        for r in registry.list(args.method, args.dataset):
            mr = "" if r.mr_mean is None else (f"{r.mr_mean:.2f}" + (f" ± {r.mr_std:.2f}" if r.mr_std else ""))
            rows.append([r.id, _fmt_time(r.created), r.effective_status, r.method, r.dataset, r.split, r.seeds, mr])
        if not rows:
            print(f"no runs in {registry.root}")
            return 0
        print(tabulate(rows, headers=["run", "created", "status", "method", "dataset", "split", "seeds", "mR"]))
    elif args.runs_command == "show":
        row = registry.get(args.run_id)
        path = registry.run_dir(row.id) / "metrics.json"
        if not path.is_file():
            print(f"run {row.id}: status {row.effective_status}, no result yet "
                  f"(continue it with `rsitr-bench run --resume {row.id}`)")
            return 0
        result = json.loads(path.read_text())
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            from rsitr_bench.reports.table import recall_table

            print(f"run {row.id} ({row.effective_status}), directory {registry.run_dir(row.id)}")
            print(recall_table(result))
    elif args.runs_command == "rm":
        for run_id in args.run_ids:
            print(f"removed {registry.remove(run_id)}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from rsitr_bench.cli_data import run_data_command

    host = _host(args)

    def build_dataset(name: str, root: Path | None, options: dict[str, Any]) -> Any:
        spec = host.get("datasets", name).spec
        from rsitr_bench.config import NoOptions

        return spec.factory(root, build_section(spec.options or NoOptions, options, "dataset"))

    return run_data_command(args, build_dataset)


def cmd_guidance(args: argparse.Namespace) -> int:
    from rsitr_bench.cli_guidance import run_guidance_command

    return run_guidance_command(args, _host(args))


def cmd_sweep(args: argparse.Namespace) -> int:
    from rsitr_bench.cli_sweep_report import run_sweep_command

    return run_sweep_command(args, _host(args), _registry(args))


def cmd_report(args: argparse.Namespace) -> int:
    from rsitr_bench.cli_sweep_report import run_report_command

    return run_report_command(args, _host(args), _registry(args))


COMMANDS = {"run": cmd_run, "list": cmd_list, "runs": cmd_runs, "data": cmd_data, "prepare": cmd_guidance,
            "show-perspectives": cmd_guidance, "sweep": cmd_sweep, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print("error: " + textwrap.fill(str(exc), width=100, subsequent_indent="  "), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
