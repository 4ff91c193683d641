"""MPS-CLIP micro-benchmarks: packed vs padded perspectives (docs/mps-clip.md §9 item 11, §10).

A batch of 8 images with 3 perspective sub-images each on average (counts 1-5, so padding to the maximum
encodes 40 sub-images where 24 exist). Measured on CPU with random weights:

* one training step (forward through both towers with G²A, MPR, hybrid loss, backward, AdamW) for the
  tiny test config and for ViT-B-32 with the spec-size serial adapters;
* image encoding throughput (global images + sub-images, inference).

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_mpsclip.py -q

``RSITR_BENCH_THREADS`` sets torch's CPU threads (default 1: on a busy 2-core machine two threads are
far slower than one).
"""

from __future__ import annotations

import logging
import os

import open_clip
import pytest
import torch

from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
from rsitr_bench.methods.mps_clip.packing import PackedPerspectives, encode_packed, encode_padded
from tests.fixtures.mpsclip_models import ToyMPSCLIP

COUNTS = [1, 5, 3, 2, 4, 3, 2, 4]  # 24 real sub-images, 40 slots when padded
ROUNDS = {"tiny": 10, "ViT-B-32": 3}


def _vit_b32() -> torch.nn.Module:
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model("ViT-B-32", pretrained=None)
    finally:
        logging.disable(logging.NOTSET)


def _batch(image_size: int, context: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    n = len(COUNTS)
    texts = torch.randint(1, 49000, (n, context), generator=gen)
    texts[:, context // 2] = 49407
    regions = [torch.randn(k, 3, image_size, image_size, generator=gen) for k in COUNTS]
    return {
        "images": torch.randn(n, 3, image_size, image_size, generator=gen),
        "texts": texts,
        "perspectives": PackedPerspectives.from_list(regions),
        "ids": torch.arange(n) // 2,
    }


@pytest.fixture(scope="module", params=["tiny", "ViT-B-32"])
def setup(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("RSITR_BENCH_THREADS", "1")))
    if request.param == "tiny":
        model, batch = ToyMPSCLIP(), _batch(64, 32)
    else:  # spec sizes: serial G²A (b = 128, 8 heads) in all 24 blocks, MPR with K = 4 heads
        model, batch = ToyMPSCLIP(clip=_vit_b32(), adapter={}, mpr_heads=4), _batch(224, 77)
    yield request.param, model, batch
    torch.set_num_threads(threads)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_train_step(benchmark, setup, layout):
    name, model, batch = setup
    model.packed = layout == "packed"
    model.train()
    loss_fn = MPSCLIPLoss("head", mpc_scale=100.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch))["loss"].backward()
        optimizer.step()

    slots = sum(COUNTS) if model.packed else len(COUNTS) * max(COUNTS)
    benchmark.extra_info.update(model=name, layout=layout, images_encoded=len(COUNTS) + slots)
    benchmark.pedantic(step, rounds=ROUNDS[name], iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_encode_images(benchmark, setup, layout):
    name, model, batch = setup
    model.eval()
    packed = batch["perspectives"]
    encode = model.clip.encode_image

    def run() -> None:
        with torch.no_grad():
            if layout == "packed":
                encode_packed(encode, batch["images"], packed)
            else:
                encode_padded(encode, batch["images"], *packed.padded())

    benchmark.extra_info.update(model=name, layout=layout, useful_images=len(COUNTS) + sum(COUNTS))
    benchmark.pedantic(run, rounds=ROUNDS[name], iterations=1, warmup_rounds=1)
    benchmark.extra_info["useful_images_per_s"] = (len(COUNTS) + sum(COUNTS)) / benchmark.stats.stats.mean
