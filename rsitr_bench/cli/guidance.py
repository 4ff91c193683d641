"""``rsitr-bench prepare``, ``show-perspectives`` and ``eval-perspectives``: precompute, inspect and measure guidance.

The main CLI adds the commands with :func:`add_guidance_commands` and runs them with
:func:`run_guidance_command`, passing its plugin host. All commands build the same
:class:`~rsitr_bench.guidance.service.GuidanceService` a run does (same roles, same leakage guard, same
cache keys), so ``prepare`` fills exactly the entries a later ``run`` reads, provided the backbone flags
(``--model``, ``--pretrained``, ``--checkpoint``) match the method's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsitr_bench.cli.tables import tabulate
from rsitr_bench.errors import UserError
from rsitr_bench.harness.paths import cache_dir

if TYPE_CHECKING:  # the guidance modules import open_clip and torch: only the commands load them, not --help
    from rsitr_bench.guidance.context import LeakageAudit
    from rsitr_bench.guidance.prepare import PreparePlan
    from rsitr_bench.guidance.service import GuidanceService

SECTIONS = ("dataset", "keywords", "gallery_keywords", "perspectives")
ROLES = ("train", "val", "test")


def add_guidance_commands(subparsers: argparse._SubParsersAction,
                          parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``prepare``, ``show-perspectives`` and ``eval-perspectives``; ``parents`` carry the common options."""
    parents = list(parents)
    prep = subparsers.add_parser(
        "prepare", parents=parents, help="precompute keywords and perspectives (sharded, resumable)",
        description="Precompute the keywords and perspectives of a dataset into the shared cache. Rerunning "
        "after an interruption skips every finished image; --shard I/N splits the work over processes or "
        "machines that share the cache. Exit code 0: done, leakage audit passed (or --as-published); "
        "1: a provider was refused gallery captions.")
    _guidance_arguments(prep)
    prep.add_argument("--splits", metavar="ROLES", default=",".join(ROLES),
                      help="comma-separated roles to prepare (default: train,val,test)")
    prep.add_argument("--shard", default="0/1", metavar="I/N", help="only images with index = I mod N")
    prep.add_argument("--as-published", action="store_true",
                      help="let gallery-side providers read val/test captions (the reference protocol); "
                      "stamped 'fail (as published)'")
    prep.add_argument("--json", action="store_true", help="print the per-split statistics as JSON")

    show = subparsers.add_parser(
        "show-perspectives", parents=parents, help="draw one image with its keywords, masks and boxes",
        description="Write a PNG of one image with the keywords and perspectives a method would get for it.")
    _guidance_arguments(show)
    show.add_argument("--image", required=True, help="image name (e.g. test_00003.png) or index in the split")
    show.add_argument("--split", choices=ROLES, default="test", help="the image's split role (default: test)")
    show.add_argument("--out", type=Path, help="output PNG (default: perspectives_<image>.png)")
    show.add_argument("--export-masks", type=Path, metavar="DIR",
                      help="also write each mask to DIR (GeoTIFF inputs keep their georeference)")

    measure = subparsers.add_parser(
        "eval-perspectives", parents=parents, help="measure perspective boxes against ground-truth object boxes",
        description="Score the boxes a run would get (same keyword provider per role, same leakage guard, same "
        "cache) against the dataset's ground-truth object boxes (synthetic-rs has them): per keyword that names "
        "an object of its image, the IoU with the best-matching object of that class; the mean IoU, the hit "
        "rate at IoU >= 0.5, boxes per image and the fraction of boxes covering more than half the image. "
        "Exit code 0: measured; 1: a provider was refused gallery captions (leakage_audit: fail).")
    _guidance_arguments(measure)
    measure.add_argument("--split", choices=ROLES, default="val",
                         help="the split role to measure (default: val; never tune on test)")
    measure.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    measure.add_argument("--json", action="store_true", help="print the report, every keyword's IoU included, "
                         "as JSON")


def _guidance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="synthetic-rs", help="dataset name (default: synthetic-rs)")
    parser.add_argument("--data-root", type=Path, help="directory holding the dataset")
    parser.add_argument("--keywords", default="rules",
                        help="keyword provider of training items (default: rules)")
    parser.add_argument("--gallery-keywords", default="vocabulary",
                        help="keyword provider of val/test gallery items (default: vocabulary, leak-free)")
    parser.add_argument("--perspectives", default="dense-clip",
                        help="perspective generator (default: dense-clip, mps-clip's default)")
    parser.add_argument("--max-per-image", type=int, default=4, help="keywords and perspectives per image")
    parser.add_argument("--model", default="rsitr-tiny",
                        help="the method's open_clip backbone (default: rsitr-tiny)")
    parser.add_argument("--pretrained", default="synthetic-rs",
                        help="open_clip pretrained tag of the backbone (default: synthetic-rs, the embedded "
                             "rsitr-tiny weights; 'none' for a random initialisation)")
    parser.add_argument("--checkpoint", help="backbone weights file")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of a randomly initialised backbone")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    parser.add_argument("--cache-dir", type=Path, help="cache directory (default: $RSITR_BENCH_CACHE)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"plugin option, SECTION one of {', '.join(SECTIONS)} (repeatable), e.g. "
                        f"--set perspectives.sam_model_type=vit_h")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_guidance_command(args: argparse.Namespace, host: Any) -> int:
    """Run ``prepare`` or ``show-perspectives``; return the exit code."""
    commands = {"prepare": _prepare, "show-perspectives": _show, "eval-perspectives": _evaluate}
    return commands[args.command](args, host)


def _options(args: argparse.Namespace) -> dict[str, dict]:
    from rsitr_bench.harness.config import apply_override, parse_override

    tree: dict[str, Any] = {}
    for text in args.overrides:
        path, value = parse_override(text)
        if path[0] not in SECTIONS or len(path) < 2:
            raise UserError(f"--set {text}: the key must be SECTION.KEY with SECTION one of "
                            f"{', '.join(SECTIONS)}.")
        apply_override(tree, path, value)
    return {section: tree.get(section, {}) for section in SECTIONS}


def _service(args: argparse.Namespace, host: Any, options: dict[str, dict], audit: LeakageAudit
             ) -> tuple[GuidanceService, Any, PreparePlan]:
    from rsitr_bench.clip.backbones import build_backbone
    from rsitr_bench.guidance.prepare import PreparePlan
    from rsitr_bench.guidance.service import GuidanceService
    from rsitr_bench.harness.environment import resolve_device

    spec = host.get("datasets", args.dataset).spec
    from rsitr_bench.harness.config import NoOptions, build_section

    dataset_options = build_section(spec.options or NoOptions, options["dataset"], "dataset")
    dataset = spec.factory(args.data_root, dataset_options)
    available = set(dataset.available_splits())
    roles = {role: dataset.load_split(name) for role, name in dataset.default_splits().items()
             if role in ROLES and name in available}
    device = resolve_device(args.device)
    log = logging.getLogger("rsitr_bench.guidance.context")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[rsitr-bench] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    service = GuidanceService(host, roles, audit, args.cache_dir or cache_dir(), device, log,
                              progress=not args.no_progress)

    def backbone() -> Any:
        pretrained = None if str(args.pretrained).lower() == "none" else args.pretrained
        return build_backbone(args.model, pretrained, args.checkpoint, args.init_seed, device)

    plan = PreparePlan(generator=args.perspectives, query_keywords=args.keywords,
                       gallery_keywords=args.gallery_keywords, generator_options=options["perspectives"],
                       query_keyword_options=options["keywords"],
                       gallery_keyword_options=options["gallery_keywords"], max_per_image=args.max_per_image)
    return service, backbone, plan


def _prepare(args: argparse.Namespace, host: Any) -> int:
    from rsitr_bench.guidance.context import LeakageAudit
    from rsitr_bench.guidance.prepare import Shard, prepare

    audit = LeakageAudit(allow_leak=args.as_published)
    service, backbone, plan = _service(args, host, _options(args), audit)
    wanted = [r.strip() for r in args.splits.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise UserError(f"--splits {args.splits}: unknown role {unknown[0]!r}; use train, val and/or test.")
    shard = Shard.parse(args.shard)
    results = prepare(service, [r for r in wanted if r in service.roles], plan, backbone, shard)
    stamp = audit.stamp()
    if args.json:
        print(json.dumps({"shard": args.shard, "leakage_audit": stamp,
                          "splits": {role: {"split": r.split, "keywords": plan.keywords_for(role)[0],
                                            "images": len(r.indices), "stats": r.stats}
                                     for role, r in results.items()}}, indent=2))
    else:
        columns = ("perspective_cache_hits", "generator_calls", "nothing_detected", "no_keywords",
                   "refused_caption_reads", "corrupt_cache_entries")
        rows = [[role, r.split, plan.keywords_for(role)[0], len(r.indices), *(r.stats[c] for c in columns)]
                for role, r in results.items()]
        print(tabulate(rows, headers=["role", "split", "keywords", "images", "cached", "computed",
                                      "nothing found", "no keywords", "refused", "corrupt"]))
        print(f"\nshard {shard.index}/{shard.count} of {args.dataset} with {plan.generator}; "
              f"leakage_audit: {stamp['status']}")
    return 1 if stamp["status"] == "fail" else 0


def _show(args: argparse.Namespace, host: Any) -> int:
    from rsitr_bench.data.images import load_rgb
    from rsitr_bench.guidance.context import LeakageAudit
    from rsitr_bench.guidance.geo import export_masks
    from rsitr_bench.guidance.render import render_perspectives

    service, backbone, plan = _service(args, host, _options(args), LeakageAudit())
    if args.split not in service.roles:
        raise UserError(f"{args.dataset} has no {args.split} split; available: {', '.join(service.roles)}.")
    split = service.roles[args.split]
    index = _image_index(split, args.image)
    provider, options = plan.keywords_for(args.split)
    result = service.perspectives(split, keywords=provider, generator=plan.generator, backbone=backbone,
                                  keyword_options=options, generator_options=plan.generator_options,
                                  max_per_image=plan.max_per_image, indices=[index])
    keywords, perspectives = result.keywords[0], result.perspectives[0]
    image_path = Path(split.image_paths[index])
    guided = result.config["keyword_guided"]
    title = f"{split.image_names[index]}: {provider} -> {plan.generator}"
    image = load_rgb(image_path, record=split.image_names[index])
    canvas = render_perspectives(image, keywords, perspectives, title=title, keyword_guided=guided)
    out = args.out or Path(f"perspectives_{Path(split.image_names[index]).stem}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(f"keywords ({provider}): {', '.join(keywords) or '(none)'}")
    for p in perspectives:
        print(f"  {p.keyword or '(cell)'}: box {list(p.box)}, score {p.score:.3f}"
              f"{', mask' if p.mask is not None else ''}")
    for keyword in (k for k in keywords if guided and k not in {p.keyword for p in perspectives}):
        print(f"  {keyword}: nothing found")
    if args.export_masks:
        for path in export_masks(image_path, perspectives, args.export_masks):
            print(f"wrote {path}")
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace, host: Any) -> int:
    from rsitr_bench.guidance.context import LeakageAudit
    from rsitr_bench.guidance.localisation import HIT_IOU, LARGE_FRACTION, measure_localisation

    audit = LeakageAudit()
    service, backbone, plan = _service(args, host, _options(args), audit)
    report = measure_localisation(service, args.split, plan, backbone, args.limit)
    stamp = audit.stamp()
    deployable = host.get("perspectives", plan.generator).spec.deployable
    summary = report.summary()
    if args.json:
        print(json.dumps({**report.to_json(), "deployable": deployable, "leakage_audit": stamp}, indent=2))
        return 1 if stamp["status"] == "fail" else 0

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [[k, v["n"], fmt(v["mean_iou"]), fmt(v["hit_rate"])] for k, v in report.per_keyword().items()]
    print(f"{report.dataset}/{report.split} ({report.split_role}), {report.images} images: "
          f"{report.keywords} -> {report.generator}")
    if rows:
        print(tabulate(rows, headers=["keyword", "n", "mean IoU", f"hit@{HIT_IOU}"]))
    print(f"\nmean IoU {fmt(summary['mean_iou'])}, hit rate (IoU >= {HIT_IOU}) {fmt(summary['hit_rate'])} over "
          f"{summary['keywords_scored']} keywords that name an object of their image "
          f"({summary['keywords_without_box']} without a box, IoU 0; {summary['keywords_without_object']} "
          f"keywords name no object of their image and are not scored)")
    print(f"boxes per image {summary['boxes_per_image']:.2f}; boxes covering > {LARGE_FRACTION:.0%} of the "
          f"image: {fmt(summary['large_box_fraction'])}; leakage_audit: {stamp['status']}")
    if not report.keyword_guided:
        print(f"{report.generator} uses no keywords: each keyword is scored against the image's best box.")
    if not deployable:
        print(f"{report.generator} reads ground-truth boxes: an upper bound, not a deployable localiser.")
    return 1 if stamp["status"] == "fail" else 0


def _image_index(split: Any, image: str) -> int:
    if image in split.image_names:
        return split.image_names.index(image)
    if image.isdigit() and int(image) < split.n_images:
        return int(image)
    raise UserError(f"No image {image!r} in {split.dataset}/{split.name}: give a file name such as "
                    f"{split.image_names[0]!r} or an index below {split.n_images}.")
