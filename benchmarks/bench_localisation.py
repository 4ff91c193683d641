"""Localisation of the perspective generators against synthetic-rs's ground-truth object boxes.

Run as a script for the table of docs/guidance.md,
``HF_HUB_OFFLINE=1 python benchmarks/bench_localisation.py --images 24``, or under pytest-benchmark,
``HF_HUB_OFFLINE=1 python -m pytest benchmarks/bench_localisation.py --benchmark-only``
(``RSITR_BENCH_LOCALISATION_IMAGES``, default 24, sets the images), which stores the table in the benchmark's
``extra_info["localisation"]``.

What is measured is what ``rsitr-bench eval-perspectives --split val --limit N`` reports (the same function):
the first N images of the embedded corpus's val split (the default ``synthetic-rs`` options), the compliant
gallery keywords (``vocabulary``) and the embedded ``rsitr-tiny`` backbone (``--pretrained synthetic-rs``), the
one ``mps-clip`` guides with. ``oracle-boxes`` is the upper bound (IoU 1 by construction).

``sam-auto`` and ``samgeo`` run ``rsitr-tiny-sam``, a SAM with **random weights** (the only SAM available
offline): their IoU says nothing about real SAM checkpoints, only that the pipeline runs. ``samgeo`` takes its
boxes from ``clip-saliency`` here (no GroundingDINO weights offline) and then cuts SAM masks inside them; boxes,
not masks, are scored.

``--tune GENERATOR --set JSON [--set JSON ...]`` scores option settings of one generator on the val images
*after* the table's first ``--images`` (val[24:], 176 images, by default) instead. ``dense-clip``'s defaults
were chosen there: never on the table's images, never on test.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import rsitr_bench.keywords
import rsitr_bench.perspectives
from rsitr_bench.clip.backbones import build_backbone
from rsitr_bench.datasets.synthetic import SyntheticOptions, make_dataset
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.localisation import (
    HIT_IOU,
    LARGE_FRACTION,
    measure_localisation,
    score_localisation,
)
from rsitr_bench.guidance.prepare import PreparePlan
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.perspectives.sam_models import TINY_SAM

pytestmark = pytest.mark.usefixtures("torch_threads")

IMAGES = int(os.environ.get("RSITR_BENCH_LOCALISATION_IMAGES", "24"))
WORK = Path(tempfile.mkdtemp(prefix="bench-localisation-"))
#: label -> (generator, options). sam-auto's thresholds are 0: random-weight SAM scores no mask above SAM's.
GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "grid": ("grid", {}),
    "clip-saliency": ("clip-saliency", {}),
    "dense-clip": ("dense-clip", {}),
    "sam-auto": ("sam-auto", {"sam_model_type": TINY_SAM, "points_per_side": 4, "pred_iou_thresh": 0.0,
                              "stability_score_thresh": 0.0, "min_area": 0.0}),
    "samgeo": ("samgeo", {"sam_model_type": TINY_SAM, "localizer": "clip-saliency"}),
    "oracle-boxes": ("oracle-boxes", {}),
}
RANDOM_WEIGHTS = ("sam-auto", "samgeo")
NOTE = (f"{' and '.join(RANDOM_WEIGHTS)} run rsitr-tiny-sam, a random-weight SAM: their IoU means nothing about "
        f"real SAM checkpoints. oracle-boxes reads the ground truth: an upper bound, not deployable.")


@functools.cache
def setup() -> dict[str, Any]:
    """The embedded corpus's splits, the plugin host and the embedded backbone."""
    logging.disable(logging.WARNING)
    dataset = make_dataset(None, SyntheticOptions())
    return {
        "roles": {role: dataset.load_split(role) for role in ("train", "val", "test")},
        "host": build_plugin_host(extra_plugins=[("keywords", rsitr_bench.keywords),
                                                 ("perspectives", rsitr_bench.perspectives)]),
        "backbone": build_backbone("rsitr-tiny", "synthetic-rs"),
    }


def measure(label: str, n_images: int) -> dict[str, Any]:
    """The localisation summary of one generator on the first ``n_images`` val images (fresh cache)."""
    s = setup()
    name, options = GENERATORS[label]
    service = GuidanceService(s["host"], s["roles"], LeakageAudit(), WORK / f"cache-{label}-{n_images}",
                              progress=False)
    report = measure_localisation(service, "val", PreparePlan(generator=name, generator_options=options),
                                  lambda: s["backbone"], n_images)
    return {**report.summary(), "random_weights": label in RANDOM_WEIGHTS, "images": report.images}


def measure_tuning(generator: str, options: dict[str, Any], first: int) -> dict[str, Any]:
    """The summary of ``generator`` with ``options`` on val images ``first`` onwards: the images options are
    tuned on, apart from the table's first ``first`` (the same service call and scoring as ``measure``)."""
    s = setup()
    split = s["roles"]["val"]
    service = GuidanceService(s["host"], s["roles"], LeakageAudit(), Path(tempfile.mkdtemp(dir=WORK)),
                              progress=False)
    plan = PreparePlan(generator=generator, generator_options=options)
    provider, keyword_options = plan.keywords_for("val")
    result = service.perspectives(split, keywords=provider, generator=generator, backbone=lambda: s["backbone"],
                                  keyword_options=keyword_options, generator_options=options,
                                  max_per_image=plan.max_per_image, indices=range(first, split.n_images),
                                  with_masks=False)
    return {**score_localisation(split, result).summary(), "random_weights": False,
            "images": len(result.indices)}


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The markdown table of docs/guidance.md."""
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"| generator | mean IoU | hit rate (IoU ≥ {HIT_IOU}) | keywords scored | boxes / image | "
             f"boxes > {LARGE_FRACTION:.0%} of image |", "|---|---|---|---|---|---|"]
    for label, row in rows.items():
        name = f"`{label}`" + (" (random-weight SAM)" if row["random_weights"] else "")
        lines.append(f"| {name} | {fmt(row['mean_iou'])} | {fmt(row['hit_rate'])} | {row['keywords_scored']} | "
                     f"{row['boxes_per_image']:.2f} | {fmt(row['large_box_fraction'])} |")
    return "\n".join(lines)


def test_localisation_against_ground_truth(benchmark, note):
    pytest.importorskip("samgeo")

    def all_generators() -> dict[str, dict[str, Any]]:
        return {label: measure(label, IMAGES) for label in GENERATORS}

    rows = benchmark.pedantic(all_generators, rounds=1, iterations=1)
    assert rows["oracle-boxes"]["mean_iou"] == 1.0
    benchmark.extra_info["localisation"] = rows
    benchmark.extra_info["images"] = IMAGES
    benchmark.extra_info["note"] = NOTE
    note(f"localisation on {IMAGES} synthetic-rs val images (vocabulary keywords):\n{table(rows)}\n{NOTE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=IMAGES, help="val images measured")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RSITR_BENCH_THREADS", "1")),
                        help="torch intra-op threads (default 1)")
    parser.add_argument("--tune", metavar="GENERATOR",
                        help="instead of the table, score GENERATOR once per --set on the val images after the "
                             "first --images (the tuning images)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="JSON",
                        help='with --tune: generator options as a JSON object, e.g. \'{"window": 0.5}\' '
                             "(repeatable; default: the generator's defaults)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tune:
        settings = [json.loads(text) for text in args.settings] or [{}]
        rows = {f"{args.tune} {json.dumps(o)}": measure_tuning(args.tune, o, args.images) for o in settings}
        n = next(iter(rows.values()))["images"]
        print(f"{n} synthetic-rs val images (val[{args.images}:]), vocabulary keywords, rsitr-tiny\n")
        print(table(rows))
        return
    rows = {label: measure(label, args.images) for label in GENERATORS}
    print(f"{args.images} synthetic-rs val images, vocabulary keywords, rsitr-tiny (synthetic-rs weights)\n")
    print(table(rows))
    print(f"\n{NOTE}")


if __name__ == "__main__":
    main()
