"""Keyword-guided perspectives: heavy model calls per image, precompute throughput, cache-hit cost.

Run as a script for the closing table, ``HF_HUB_OFFLINE=1 python benchmarks/bench_guidance.py --images 16``,
or under pytest-benchmark, ``HF_HUB_OFFLINE=1 python -m pytest benchmarks/bench_guidance.py --benchmark-only``
(``RSITR_BENCH_GUIDANCE_IMAGES``, default 8, sets the images per measurement).

Everything uses offline random-weight models (the ``rsitr-tiny`` CLIP, ``rsitr-tiny-sam``, a tiny
GroundingDINO), so the timings measure the pipeline's overhead and call pattern on this machine, not the cost
of real checkpoints (a real SAM ViT-B encoder alone takes ~26 s per image on a 2-core CPU, measured on
the development machine).

* Heavy calls per image: detector forwards and SAM image-encoder forwards, counted by forward hooks, for
  ``samgeo`` with the GroundingDINO localizer; compared with what the reference pipeline would run on the
  same captions (one GroundingDINO + one SAM ViT-H encoding per (caption, noun) pair, duplicates included).
* Throughput: images/s of a cold-cache pass over training images (keywords ``rules``) per generator, after
  a one-image warm-up that loads the models.
* Cache hit: ms per image when every keyword and perspective entry is already cached.

Torch runs with ``RSITR_BENCH_THREADS`` (default 1) intra-op threads: on a shared 2-core machine more
threads make the tiny models several times slower, not faster.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import rsitr_bench.keywords
import rsitr_bench.perspectives
from rsitr_bench.api import GuidanceResult
from rsitr_bench.clip.backbones import build_backbone
from rsitr_bench.datasets.synthetic import SyntheticOptions, make_dataset
from rsitr_bench.guidance.context import LeakageAudit
from rsitr_bench.guidance.service import GuidanceService
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.keywords.rules import RulesOptions, build_lexicon
from rsitr_bench.perspectives.sam_models import TINY_SAM
from rsitr_bench.perspectives.tiny_models import build_tiny_grounding_dino

pytestmark = pytest.mark.usefixtures("torch_threads")

IMAGES = int(os.environ.get("RSITR_BENCH_GUIDANCE_IMAGES", "8"))
WORK = Path(tempfile.mkdtemp(prefix="bench-guidance-"))


@functools.cache
def setup(n_images: int) -> dict[str, Any]:
    """Corpus (``n_images`` timed training images + 1 warm-up image), plugin host, tiny models."""
    logging.disable(logging.WARNING)
    options = SyntheticOptions(n_train=n_images + 1, n_val=1, n_test=1)
    dataset = make_dataset(WORK / f"data-{n_images}", options)
    detector = WORK / "gdino" if (WORK / "gdino").is_dir() else build_tiny_grounding_dino(WORK / "gdino")
    return {
        "roles": {role: dataset.load_split(role) for role in ("train", "val", "test")},
        "host": build_plugin_host(extra_plugins=[("keywords", rsitr_bench.keywords),
                                                 ("perspectives", rsitr_bench.perspectives)]),
        "backbone": build_backbone("rsitr-tiny"),
        "generators": {
            "grid": ("grid", {}),
            "clip-saliency": ("clip-saliency", {}),
            "samgeo/clip-saliency": ("samgeo", {"sam_model_type": TINY_SAM, "localizer": "clip-saliency"}),
            "samgeo/grounding-dino": ("samgeo", {"sam_model_type": TINY_SAM, "localizer": "grounding-dino",
                                                 "detector": str(detector), "box_threshold": 0.0}),
        },
    }


def run(label: str, cache: Path, indices: list[int], n_images: int) -> tuple[GuidanceResult, float]:
    """One pass of a fresh service (a new process, as far as plugins go) over training ``indices``."""
    s = setup(n_images)
    name, options = s["generators"][label]
    service = GuidanceService(s["host"], s["roles"], LeakageAudit(), cache, "cpu", progress=False)
    start = time.perf_counter()
    result = service.perspectives(s["roles"]["train"], keywords="rules", generator=name,
                                  backbone=lambda: s["backbone"], generator_options=options, indices=indices)
    return result, time.perf_counter() - start


def reference_calls_per_image(n_images: int) -> float:
    """GroundingDINO (= SAM encoder) calls per image of the reference: one per (caption, noun) pair."""
    train = setup(n_images)["roles"]["train"]
    lexicon = build_lexicon(RulesOptions())
    return sum(len(lexicon.find(c)) for c in train.captions) / train.n_images


def measure(label: str, n_images: int) -> dict[str, float]:
    """Cold throughput, cache-hit cost and heavy calls per image of one generator."""
    cache = WORK / f"cache-{label.replace('/', '-')}-{n_images}-{time.monotonic_ns()}"
    run(label, cache, [n_images], n_images)  # warm-up image: loads the models
    timed = list(range(n_images))
    cold, cold_s = run(label, cache, timed, n_images)
    hot, hot_s = run(label, cache, timed, n_images)
    assert hot.stats["generator_calls"] == 0
    return {
        "images_per_s": n_images / cold_s,
        "cache_hit_ms_per_image": 1000 * hot_s / n_images,
        "detector_calls_per_image": cold.stats["detector_calls"] / n_images,
        "sam_encoder_calls_per_image": cold.stats["sam_image_encoder_calls"] / n_images,
        "perspectives_per_image": sum(map(len, cold.perspectives)) / n_images,
    }


def test_heavy_calls_are_one_detector_and_one_sam_encoding_per_image(benchmark, note):
    row = benchmark.pedantic(measure, args=("samgeo/grounding-dino", IMAGES), rounds=1, iterations=1)
    assert row["detector_calls_per_image"] == 1.0 and row["sam_encoder_calls_per_image"] == 1.0
    note(f"guidance: samgeo runs {row['detector_calls_per_image']:.0f} detector + "
         f"{row['sam_encoder_calls_per_image']:.0f} SAM encoder call per image; the reference would run "
         f"{reference_calls_per_image(IMAGES):.1f} of each on the same captions")


@pytest.mark.parametrize("label", ["grid", "clip-saliency", "samgeo/clip-saliency"])
def test_cold_precompute_throughput(benchmark, note, label):
    run(label, WORK / f"warm-{label.replace('/', '-')}", [IMAGES], IMAGES)
    fresh = iter(range(10 ** 6))

    def cold():
        return run(label, WORK / f"cold-{label.replace('/', '-')}-{next(fresh)}", list(range(IMAGES)), IMAGES)

    benchmark.pedantic(cold, rounds=2 if label.startswith("samgeo") else 5, iterations=1)
    note(f"guidance: {label} precomputes {IMAGES / benchmark.stats.stats.median:.2f} images/s (cold cache)")


def test_cache_hit_cost(benchmark, note):
    cache = WORK / "hits"
    run("clip-saliency", cache, list(range(IMAGES)), IMAGES)
    result, _ = benchmark(run, "clip-saliency", cache, list(range(IMAGES)), IMAGES)
    assert result.stats["generator_calls"] == 0
    note(f"guidance: a fully cached image costs {1000 * benchmark.stats.stats.median / IMAGES:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="training images timed per generator")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RSITR_BENCH_THREADS", "1")),
                        help="torch intra-op threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {label: measure(label, args.images) for label in setup(args.images)["generators"]}
    reference = reference_calls_per_image(args.images)
    print(f"torch threads: {args.threads}; {args.images} synthetic-rs training images (128 px)")
    print(f"reference pipeline on the same captions: {reference:.1f} GroundingDINO + {reference:.1f} SAM "
          f"encoder calls per image\n")
    print(f"{'generator':24s} {'img/s':>8s} {'hit ms/img':>11s} {'det/img':>8s} {'SAM/img':>8s} "
          f"{'persp/img':>10s}")
    for label, row in rows.items():
        print(f"{label:24s} {row['images_per_s']:8.2f} {row['cache_hit_ms_per_image']:11.2f} "
              f"{row['detector_calls_per_image']:8.2f} {row['sam_encoder_calls_per_image']:8.2f} "
              f"{row['perspectives_per_image']:10.2f}")
    if args.json:
        report = {"torch_threads": args.threads, "images": args.images,
                  "reference_calls_per_image": reference, "generators": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
