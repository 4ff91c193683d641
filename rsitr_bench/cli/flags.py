"""The flags that configure a run, declared once for every command that starts runs (``run``, ``eval``,
``sweep``), so a flag means the same thing, with the same help, wherever it is typed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rsitr_bench.harness.defaults import DEFAULT_DATASET


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


def comma_list(text: str | None) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``; None -> ``[]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    """``--output PATH`` (repeatable), shared by ``run``, ``eval`` and ``leaderboard``."""
    parser.add_argument("--output", action="append", type=Path, default=[], metavar="PATH",
                        help="also write the result here, by suffix: .json (the run's metrics.json; for several "
                             "runs a list) or .md (the results table); repeatable; the registry keeps its record")


def add_result_flags(parser: argparse.ArgumentParser) -> None:
    """``--model --pretrained --data-dir --limit --log-samples --output``: what ``run`` and ``eval`` score and keep.

    A comma list in ``--model`` or ``--dataset`` makes a grid: every model on every dataset, one run each.
    """
    add = parser.add_argument
    add("--model", help="backbone: an open_clip model (ViT-B-32), MODEL/TAG (ViT-B-32/openai), a catalog name "
                        "(`rsitr-bench list pretrained`) or hf-hub:OWNER/REPO; a comma list runs each (with a comma "
                        "list in --dataset: every model on every dataset) and prints one table")
    add("--pretrained", help="the weights tag of bare --model names (e.g. openai, synthetic-rs; entries that name "
                             "their own weights keep them); none: random initialisation (--set method.pretrained=)")
    add("--data-dir", type=Path, help="with several --dataset: a folder with one sub-folder per dataset (default: "
                                      "fetch each dataset's package into $RSITR_BENCH_HOME/data)")
    add("--limit", type=int, metavar="N", help="score only the first N test images and their captions (a smoke "
                                               "test: stamped non-comparable, never ranked)")
    add("--log-samples", action="store_true", help="write every query's top-10 retrieved items and the rank of "
                                                   "its first positive to seeds/<seed>/samples.jsonl")
    add_output_flag(parser)


def result_flag_values(args: argparse.Namespace) -> list[tuple[Any, list[str]]]:
    """``--limit`` and ``--log-samples`` as ``(value, path)`` pairs for ``assemble_tree``."""
    return [(args.limit, ["eval", "limit"]), (True if args.log_samples else None, ["run", "log_samples"])]


def pretrained_overrides(args: argparse.Namespace) -> list[str]:
    """``--pretrained`` as a ``--set`` text (``none`` -> null, a random initialisation), to go before the user's."""
    if args.pretrained is None:
        return []
    return [f"method.pretrained={'null' if args.pretrained.lower() in ('none', 'null') else args.pretrained}"]
