"""The ``rsitr-bench`` command line: a thin layer over the library API.

Every user-facing failure (unknown names, bad config, missing files, bad checkpoints, unwritable
directories) is a :class:`rsitr_bench.errors.UserError`, printed as one paragraph with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsitr_bench import __version__
from rsitr_bench.cli.flags import (
    add_config_flags,
    add_result_flags,
    comma_list,
    config_flag_values,
    pretrained_overrides,
    result_flag_values,
)
from rsitr_bench.cli.lists import LIST_TARGETS, print_list_target
from rsitr_bench.errors import UserError
from rsitr_bench.harness.paths import registry_dir

if TYPE_CHECKING:
    from rsitr_bench.harness.plugins import PluginHost
    from rsitr_bench.harness.registry import Registry

# Building the parser imports nothing heavy (no torch, numpy or pydantic), so `--help` and `--version` answer at
# once; each command imports what it needs when it runs.


#: The `list` targets. The plugin kinds are spelled out here rather than read from `rsitr_bench.api`, whose import
#: costs numpy; `cmd_list` checks the value against the real table, and a test keeps this text in step with it.
LIST_HELP = "what to list: all (default), plugins, datasets, keywords, perspectives, methods, pretrained or models"


def _common(top: bool = False) -> argparse.ArgumentParser:
    """The global options, accepted before and after the sub-command.

    Only the top-level parser sets their defaults: a sub-command parser that also did would overwrite a value
    given before the sub-command (``rsitr-bench --registry X runs ls``) with its own default.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-plugin", action="append", default=[] if top else argparse.SUPPRESS, metavar="NAME",
                        help="do not load the plugin NAME (repeatable); see `rsitr-bench list plugins`")
    common.add_argument("--registry", type=Path, default=None if top else argparse.SUPPRESS,
                        help="run registry directory (default: $RSITR_BENCH_HOME/runs)")
    common.add_argument("--registry-index", metavar="URL", default=None if top else argparse.SUPPRESS,
                        help="database URL of the registry's index, shared by several machines, e.g. "
                             "postgresql+psycopg://user:pw@host/db (default: $RSITR_BENCH_REGISTRY_URL, else "
                             "index.sqlite in the registry directory)")
    return common


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that configure one run, shared by ``run`` and ``eval``."""
    add_config_flags(parser)
    add = parser.add_argument
    add("--format", dest="data_format",
        help="force an annotation format (karpathy, finetune, precomp, csv, coco, nwpu-json, lines)")
    add("--seeds", help="comma-separated seeds, e.g. 0,1,2 (mean ± std over them)")
    add_result_flags(parser)


def _run_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration tree of ``run`` / ``eval``: YAML file, then flags, then ``--set`` overrides."""
    from rsitr_bench.harness.config import assemble_tree

    datasets = comma_list(args.dataset)  # several: a grid axis (cli.eval.run_configured), not one name
    flags = [(args.method, ["method", "name"]), (datasets[0] if len(datasets) == 1 else None, ["dataset", "name"]),
             *config_flag_values(args), *result_flag_values(args),
             (args.data_format, ["dataset", "format"]), (args.seeds, ["run", "seeds"]),
             (getattr(args, "checkpoint", None), ["method", "checkpoint"])]
    return assemble_tree(args.config, flags, [*pretrained_overrides(args), *args.overrides])


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="rsitr-bench", parents=[_common(top=True)],
                                     description="Benchmark harness for remote-sensing image-text retrieval.")
    parser.add_argument("--version", action="version", version=f"rsitr-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run a method on a dataset and record the result")
    add_run_flags(run)
    run.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its last finished stage")

    lister = sub.add_parser("list", parents=[common], help="list registered plugins")
    lister.add_argument("what", nargs="?", default="all", metavar="WHAT", help=LIST_HELP)

    from rsitr_bench.cli.ablate import add_ablate_command
    from rsitr_bench.cli.data import add_data_commands
    from rsitr_bench.cli.eval import add_eval_commands
    from rsitr_bench.cli.guidance import add_guidance_commands
    from rsitr_bench.cli.runs import add_runs_commands
    from rsitr_bench.cli.sweep_report import add_sweep_report_commands

    add_runs_commands(sub, parents=[common])
    add_eval_commands(sub, parents=[common], add_run_flags=add_run_flags)
    add_data_commands(sub, parents=[common])
    add_guidance_commands(sub, parents=[common])
    add_sweep_report_commands(sub, parents=[common])
    add_ablate_command(sub, parents=[common])
    return parser


def _registry(args: argparse.Namespace, create: bool = True) -> Registry:
    """The run registry; commands that only inspect it pass ``create=False`` and never make one."""
    from rsitr_bench.harness.registry import Registry

    return Registry(args.registry or registry_dir(), create=create, index_url=args.registry_index)


def _host(args: argparse.Namespace) -> PluginHost:
    from rsitr_bench.harness.plugins import build_plugin_host

    host = build_plugin_host(blocked=args.no_plugin)
    for failure in host.failures:
        print(f"warning: plugin {failure.name!r} (distribution {failure.distribution}) was skipped: "
              f"{failure.stage} failed with {failure.error}", file=sys.stderr)
    return host


def cmd_run(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.eval import run_configured
    from rsitr_bench.cli.results import check_outputs, print_results
    from rsitr_bench.harness import runner
    from rsitr_bench.harness.evaluation import EvalResult

    check_outputs(args.output)
    host = _host(args)
    registry = _registry(args)
    if args.resume:
        config = runner.load_run_config(registry, args.resume, host)
        outcome = runner.execute(config, host, registry, resume_id=args.resume)
        results = [EvalResult(outcome.run_id, outcome)]
    else:
        results = run_configured(args, host, registry, _run_tree(args), fit=True)
    print_results(results, args.output)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from rsitr_bench.api import PLUGIN_KINDS

    if args.what in LIST_TARGETS:
        return print_list_target(args.what)
    known = ["all", "plugins", *PLUGIN_KINDS, *LIST_TARGETS]
    if args.what not in known:
        raise UserError(f"Nothing called {args.what!r} to list; choose one of {', '.join(known)}.")
    host = _host(args)
    if args.what in ("all", "plugins"):
        rows = [[p.name, p.distribution, p.version, p.module] for p in host.plugins]
        print(tabulate(rows, headers=["plugin", "distribution", "version", "module"]))
        for f in host.failures:
            print(f"(skipped) {f.name} [{f.distribution}]: {f.stage}: {f.error}")
        if args.what == "plugins":
            return 0
        print()
    kinds = list(PLUGIN_KINDS) if args.what == "all" else [args.what]
    for kind in kinds:
        rows = [[name, reg.plugin.distribution, reg.plugin.version, reg.spec.description]
                for name, reg in sorted(host.tables[kind].items())]
        print(tabulate(rows, headers=[PLUGIN_KINDS[kind].human, "distribution", "version", "description"]))
        print()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.runs import run_runs_command

    return run_runs_command(args, args.registry or registry_dir(), args.registry_index)


def cmd_data(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.data import run_data_command

    host = _host(args)

    def build_dataset(name: str, root: Path | None, options: dict[str, Any]) -> Any:
        from rsitr_bench.harness.config import NoOptions, build_section

        spec = host.get("datasets", name).spec

        return spec.factory(root, build_section(spec.options or NoOptions, options, "dataset"))

    return run_data_command(args, build_dataset)


def cmd_guidance(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.guidance import run_guidance_command

    return run_guidance_command(args, _host(args))


def cmd_sweep(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.sweep_report import run_sweep_command

    return run_sweep_command(args, _host(args), _registry(args))


def cmd_eval(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.eval import run_eval_command

    return run_eval_command(args, _host(args), _registry(args), lambda: _run_tree(args))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.eval import run_leaderboard_command
    from rsitr_bench.harness.config import assemble_tree

    flags = [(args.device, ["run", "device"]), (False if args.no_progress else None, ["run", "progress"])]
    tree = assemble_tree(None, flags, args.overrides)
    return run_leaderboard_command(args, _host(args), _registry(args), tree)


def cmd_ablate(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.ablate import run_ablate_command

    return run_ablate_command(args, _host(args), _registry(args))


def cmd_report(args: argparse.Namespace) -> int:
    from rsitr_bench.cli.sweep_report import run_report_command

    return run_report_command(args, _host(args), _registry(args, create=False))


COMMANDS = {"run": cmd_run, "list": cmd_list, "runs": cmd_runs, "data": cmd_data, "prepare": cmd_guidance,
            "show-perspectives": cmd_guidance, "eval-perspectives": cmd_guidance, "sweep": cmd_sweep,
            "report": cmd_report, "eval": cmd_eval, "leaderboard": cmd_leaderboard, "ablate": cmd_ablate}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print("error: " + textwrap.fill(str(exc), width=100, subsequent_indent="  ", break_on_hyphens=False),
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rsitr-bench runs ls | head`): stop quietly, as Unix tools do on SIGPIPE, and
        # point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
