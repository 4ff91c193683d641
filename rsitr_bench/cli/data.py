"""``rsitr-bench data stats|verify|diff``: look at a dataset before trusting numbers computed on it.

The main CLI adds these commands with :func:`add_data_commands` and runs them with
:func:`run_data_command`, passing its own way of building a dataset (the plugin host), so this module
needs no knowledge of how datasets are registered.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsitr_bench.cli.tables import tabulate
from rsitr_bench.data.text import NORMALIZATIONS
from rsitr_bench.errors import DataError

if TYPE_CHECKING:
    from rsitr_bench.api import Dataset

BuildDataset = Callable[[str, Path | None, dict], "Dataset"]
SHOWN = 20  # items listed per section in text output; --json lists all


def add_data_commands(subparsers: argparse._SubParsersAction,
                      parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``data`` command and its ``stats``, ``verify`` and ``diff`` subcommands.

    Arguments:
        parents: parsers whose options (e.g. the CLI's common ``--no-plugin``) every subcommand accepts.
    """
    parents = list(parents)
    data = subparsers.add_parser(
        "data", parents=parents, help="inspect a dataset: statistics, image checks, differences between copies",
        description="Inspect a dataset found under --data-root. Exit code 0: all good; 1: problems found.")
    commands = data.add_subparsers(dest="data_command", metavar="{stats,verify,diff,fetch,packages}", required=True)
    stats = commands.add_parser("stats", parents=parents, help="per split: sizes, blank, duplicate and shared captions",
                                description="Per split: images, captions, captions per image, blank captions, "
                                "duplicates within an image, captions shared across images, ambiguous t2i "
                                "queries, skipped records and the fingerprint. Images are not required.")
    verify = commands.add_parser("verify", parents=parents, help="check that every image exists and decodes",
                                 description="Check that every image of every split exists, decodes to RGB "
                                 "and has an extension that matches its content.")
    diff = commands.add_parser("diff", parents=parents,
                               help="explain why two copies of a split have different fingerprints",
                               description="Compare a split with another copy (another format, folder or "
                               "split): images in one only and captions that differ per image.")
    for parser in (stats, verify, diff):
        _dataset_arguments(parser, "")
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    for parser in (stats, verify):
        parser.add_argument("--split", action="append", metavar="NAME",
                            help="only this split (repeatable); default: every split found")
    for parser in (stats, diff):
        parser.add_argument("--normalization", choices=sorted(NORMALIZATIONS), default="none",
                            help="caption normalisation applied before counting or comparing (default: none)")
    diff.add_argument("--split", required=True, metavar="NAME", help="the split to compare")
    diff.add_argument("--other-split", metavar="NAME", help="the other copy's split (default: --split)")
    diff.add_argument("--other-dataset", metavar="NAME", help="the other copy's dataset (default: --dataset)")
    _dataset_arguments(diff, "other-")
    _fetch_commands(commands, parents)
    return data


def _fetch_commands(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    fetch = commands.add_parser(
        "fetch", parents=parents, help="download a dataset package, unpack it safely and verify its splits",
        description="Download a dataset package (see `data packages`), unpack it safely into --to DIR, and "
        "verify the pinned split sizes through the dataset plugin. DIR only ever receives a verified copy. "
        "HF_HUB_OFFLINE=1 (or RSITR_BENCH_OFFLINE=1) allows cached downloads only.")
    fetch.add_argument("dataset", metavar="DATASET", help="dataset name (its default package) or a package name")
    fetch.add_argument("--to", required=True, type=Path, metavar="DIR", help="folder for the dataset (empty or new)")
    fetch.add_argument("--package", metavar="NAME", help="the package to fetch (default: the dataset's default)")
    fetch.add_argument("--force", action="store_true", help="replace a non-empty DIR once the new copy is verified")
    packages = commands.add_parser("packages", parents=parents, help="list the data packages `data fetch` knows",
                                   description="List the data packages: dataset, size, sources, pinned counts.")
    for parser in (fetch, packages):
        parser.add_argument("--catalog", action="append", default=[], type=Path, metavar="FILE",
                            help="extra package catalog YAML (repeatable), in the format of the built-in one")
    packages.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _dataset_arguments(parser: argparse.ArgumentParser, prefix: str) -> None:
    whose = "the other copy's " if prefix else ""
    default = " (default: --data-root)" if prefix else ""
    if not prefix:
        parser.add_argument("--dataset", required=True, metavar="NAME", help="registered dataset name")
    parser.add_argument(f"--{prefix}data-root", type=Path, metavar="DIR", help=f"{whose}data folder{default}")
    parser.add_argument(f"--{prefix}format", metavar="FORMAT",
                        help=f"{whose}annotation format (default: auto, chosen from the files present)")
    parser.add_argument(f"--{prefix}image-root", metavar="DIR",
                        help=f"{whose}image folder, absolute or relative to the data root")
    if not prefix:
        parser.add_argument("--allow-missing-images", action="store_true",
                            help="skip records whose image is missing (stats lists them) instead of failing")


def _options(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """Only the options given on the command line: datasets without them (synthetic) stay valid."""
    options: dict[str, Any] = {}
    if getattr(args, f"{prefix}format", None):
        options["format"] = getattr(args, f"{prefix}format")
    if getattr(args, f"{prefix}image_root", None):
        options["image_root"] = getattr(args, f"{prefix}image_root")
    if getattr(args, "allow_missing_images", False):
        options["allow_missing_images"] = True
    return options




def run_data_command(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    """Run ``data stats|verify|diff``; return the exit code (0: all good, 1: problems found).

    Arguments:
        build_dataset: ``(name, data_root, options) -> Dataset``, the caller's dataset resolver.
    """
    commands = {"stats": _stats, "verify": _verify, "diff": _diff, "fetch": _fetch, "packages": _packages}
    return commands[args.data_command](args, build_dataset)


def _fetch(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    from rsitr_bench.data.fetch import fetch_dataset

    report = fetch_dataset(args.dataset, args.to, force=args.force, package=args.package, catalogs=args.catalog,
                           build_dataset=build_dataset)
    print(tabulate([[name, s["images"], s["captions"], s["fingerprint"]["sha256"][:12]]
                    for name, s in report.splits.items()], headers=["split", "images", "captions", "sha256"]))
    for f in report.files:
        print(f"{f['source']}: {f['skipped']}" if "skipped" in f else
              f"{f['source']}: sha256 {f['sha256'][:12]}{' (downloaded)' if f['downloaded'] else ' (cached)'}")
    if not report.verified_package:
        print(f"note: the catalog entry of {report.package} is not verified on real bytes "
              f"(see `rsitr-bench data packages`); the split sizes above were checked.")
    print(f"\n{report.dataset} is in {report.root} (provenance: {report.provenance.name}); use "
          f"--dataset {report.dataset} --data-root {report.root}")
    return 0


def _packages(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    from rsitr_bench.data.packages import load_catalog

    catalog = load_catalog(args.catalog)
    if args.json:
        print(json.dumps([{"name": p.name, "dataset": p.dataset, "default": p.default, "title": p.title,
                           "size_mb": p.size_mb, "verified": p.verified, "note": p.note, "licence": p.licence,
                           "expect": p.expect, "sources": [f.source for f in p.files]}
                          for p in catalog.packages.values()], indent=2))
        return 0
    rows = [[p.name + (" *" if p.default else ""), p.dataset, "?" if p.size_mb is None else f"{p.size_mb:g}",
             "yes" if p.verified else "no", ", ".join(f"{k} {i}/{c}" for k, (i, c) in p.expect.items()), p.title]
            for p in catalog.packages.values()]
    print(tabulate(rows, headers=["package (* default)", "dataset", "MB", "verified", "pinned images/captions",
                                  "title"]))
    return 0


def _stats(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    from rsitr_bench.data.stats import split_stats


    dataset = build_dataset(args.dataset, args.data_root, _options(args))
    rows = []
    for name in args.split or dataset.available_splits():
        try:
            stats = split_stats(dataset.load_split(name, check_images=args.allow_missing_images), args.normalization)
        except DataError as exc:
            rows.append({"split": name, "error": str(exc)})
            continue
        expected = dataset.expected_size(name)
        if expected:
            stats["expected"] = {"images": expected[0], "captions": expected[1]}
        rows.append(stats)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "data_root": str(args.data_root),
                          "normalization": args.normalization, "splits": rows}, indent=2))
    else:
        _print_stats(rows)
    return 1 if any("error" in row for row in rows) else 0


def _print_stats(rows: list[dict[str, Any]]) -> None:
    table = []
    for s in rows:
        if "error" in s:
            continue
        cpi = s["captions_per_image"]
        table.append([s["split"], s["format"], s["images"], s["captions"],
                      f"{cpi['min']}-{cpi['max']} (mean {cpi['mean']:g})", s["distinct_captions"], s["blank_captions"],
                      f"{s['duplicate_captions_within_image']} / {s['images_with_duplicate_captions']}",
                      f"{s['captions_shared_across_images']} / {s['images_sharing_a_caption']}",
                      s["ambiguous_t2i_queries"], s["skipped_records"], s["fingerprint"]["sha256"][:12]])
    if table:
        print(tabulate(table, headers=["split", "format", "images", "captions", "captions/image", "distinct",
                                       "blank", "dup in image (caps / imgs)", "shared (strings / imgs)",
                                       "ambiguous t2i", "skipped", "sha256"]))
    for s in rows:
        if "error" in s:
            print(f"\n{s['split']}: ERROR {s['error']}")
            continue
        print(f"\n{s['split']}: {s['source']}")
        expected = s.get("expected")
        if expected and (expected["images"], expected["captions"]) != (s["images"], s["captions"]):
            print(f"  note: the published split has {expected['images']} images / {expected['captions']} "
                  f"captions; this copy has {s['images']} / {s['captions']}")
        for item in s["skipped"][:SHOWN]:
            print(f"  skipped {item['image']}: {item['reason']} ({item['record']})")
        if s["skipped_records"] > SHOWN:
            print(f"  ... and {s['skipped_records'] - SHOWN} more skipped (--json lists all)")


def _verify(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    from rsitr_bench.data.stats import verify_images


    dataset = build_dataset(args.dataset, args.data_root, _options(args))
    checked: set[Path] = set()
    results = []
    for name in args.split or dataset.available_splits():
        try:
            results.append(verify_images(dataset.load_split(name, check_images=False), checked))
        except DataError as exc:
            results.append({"split": name, "error": str(exc)})
    if args.json:
        print(json.dumps({"dataset": args.dataset, "data_root": str(args.data_root), "splits": results}, indent=2))
    else:
        rows = [[r["split"], r.get("checked", "-"), len(r.get("problems", [])), "error" if "error" in r else "ok"]
                for r in results]
        print(tabulate(rows, headers=["split", "images checked", "problems", "annotations"]))
        for r in results:
            if "error" in r:
                print(f"\n{r['split']}: ERROR {r['error']}")
            for p in r.get("problems", [])[:SHOWN]:
                print(f"{r['split']} {p['image']}: {p['problem']} ({p['path']})")
            if len(r.get("problems", [])) > SHOWN:
                print(f"{r['split']}: ... and {len(r['problems']) - SHOWN} more problems (--json lists all)")
    return 1 if any("error" in r or r["problems"] for r in results) else 0


def _diff(args: argparse.Namespace, build_dataset: BuildDataset) -> int:
    from rsitr_bench.data.stats import diff_splits


    first = build_dataset(args.dataset, args.data_root, _options(args))
    second = build_dataset(args.other_dataset or args.dataset, args.other_data_root or args.data_root,
                           _options(args, "other_"))
    a = first.load_split(args.split, check_images=False)
    b = second.load_split(args.other_split or args.split, check_images=False)
    report = diff_splits(a, b, args.normalization)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_diff(report)
    return 0 if report["same_fingerprint"] else 1


def _print_diff(report: dict[str, Any]) -> None:
    print(tabulate([[side, report[side]["split"], report[side]["fingerprint"]["images"],
                     report[side]["fingerprint"]["captions"], report[side]["fingerprint"]["sha256"][:12],
                     report[side]["source"]] for side in ("a", "b")],
                   headers=["", "split", "images", "captions", "sha256", "source"]))
    if report["same_fingerprint"]:
        print(f"\nSame content (normalisation {report['normalization']}).")
        return
    print(f"\n{report['images_in_both']} images in both; {len(report['only_in_a'])} only in a; "
          f"{len(report['only_in_b'])} only in b; {report['images_with_caption_differences']} with different "
          f"captions (normalisation {report['normalization']}).")
    for side in ("a", "b"):
        names = report[f"only_in_{side}"]
        if names:
            more = f" ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            print(f"only in {side}: {', '.join(names[:SHOWN])}{more}")
    for d in report["differences"][:SHOWN]:
        print(f"\n{d['image']}:")
        for text in d["only_in_a"]:
            print(f"  a: {text!r}")
        for text in d["only_in_b"]:
            print(f"  b: {text!r}")
    if len(report["differences"]) > SHOWN:
        print(f"\n... and {len(report['differences']) - SHOWN} more images differ (--json lists all)")
