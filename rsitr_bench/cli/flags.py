"""The flags that configure a run, declared once for every command that starts runs (``run``, ``eval``,
``sweep``), so a flag means the same thing, with the same help, wherever it is typed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rsitr_bench.harness.config import DEFAULT_DATASET


def add_config_flags(parser: argparse.ArgumentParser, *, method_required: bool = False) -> None:
    """``--method --dataset --data-root --config --set --device --no-progress``."""
    add = parser.add_argument
    add("--method", required=method_required, help="method name (see `rsitr-bench list methods`)")
    add("--dataset", help=f"dataset name (default: the embedded {DEFAULT_DATASET})")
    add("--data-root", help="directory holding the dataset")
    add("--config", type=Path, help="YAML run configuration (for a sweep: the base of every trial)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, e.g. --set train.lr=4e-5 (repeatable; a sweep fixes it for every trial)")
    add("--device", help="auto, cpu, cuda, cuda:1 or mps")
    add("--no-progress", action="store_true", help="no progress bars")


def config_flag_values(args: argparse.Namespace) -> list[tuple[Any, list[str]]]:
    """Where the shared flags go in the configuration tree, as ``(value, path)`` pairs for ``assemble_tree``.

    ``--method`` and ``--dataset`` are left to each command: a sweep names them in its study, not its tree.
    """
    return [(args.data_root, ["data", "root"]), (args.device, ["run", "device"]),
            (False if args.no_progress else None, ["run", "progress"])]
