"""Shared helpers of the MPS-CLIP and engine tests: a tiny open_clip model, a toy MPS-CLIP training module
and a deterministic synthetic loader. Not collected by pytest (leading underscore)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsitr_bench.api import RunContext
from rsitr_bench.engine import LoaderPlan
from rsitr_bench.methods.mps_clip.adapter import add_g2a_adapters, mark_trainable
from rsitr_bench.methods.mps_clip.mpr import MPR
from rsitr_bench.methods.mps_clip.packing import (
    PackedPerspectives,
    encode_packed,
    encode_padded,
    regions_or_global,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_NAME = "rsitr-tiny-test"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
IMAGE = (3, 64, 64)
CONTEXT = 32
# Small adapters keep the tests fast; the spec sizes are checked on ViT-B-32 built on the meta device.
SMALL_ADAPTER = {"bottleneck": 16, "heads": 2, "ga_width": 8}


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Tiny models run ~100× faster on one thread than on two when the 2 shared cores are busy (measured:
    22 ms vs 3 s per step); import this fixture into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=1)
def _register_tiny() -> None:
    import open_clip

    folder = Path(tempfile.mkdtemp(prefix="rsitr-openclip-"))
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_NAME}.json")


def tiny_clip(seed: int = 0) -> nn.Module:
    """The tiny open_clip CLIP of docs/install.md with random weights (same seed → same weights)."""
    import open_clip

    _register_tiny()
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        return open_clip.create_model(TINY_NAME, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)


class ToyMPSCLIP(nn.Module):
    """A minimal MPS-CLIP training module in the engine's contract: ``forward(batch) -> features``."""

    def __init__(self, variant: str = "serial", seed: int = 0, dropout: float = 0.1, packed: bool = True,
                 train_mpr: bool = True, clip: nn.Module | None = None, adapter: dict | None = None,
                 mpr_heads: int = 2):
        super().__init__()
        self.clip = tiny_clip(seed) if clip is None else clip
        torch.manual_seed(seed + 1)
        add_g2a_adapters(self.clip, variant, dropout=dropout, drop_path=dropout,
                         **(SMALL_ADAPTER if adapter is None else adapter))
        self.mpr = MPR(self.clip.text_projection.shape[1], heads=mpr_heads)
        self.packed = packed
        mark_trainable(self, train_mpr=train_mpr)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        persp: PackedPerspectives = batch["perspectives"]
        if self.packed:
            g, r, has = encode_packed(self.clip.encode_image, batch["images"], persp)
        else:
            g, r, has = encode_padded(self.clip.encode_image, batch["images"], *persp.padded())
        t = F.normalize(self.clip.encode_text(batch["texts"]), dim=-1)
        v = self.mpr(regions_or_global(g, r, has))
        return {"image": g, "text": t, "perspectives": v, "ids": batch["ids"]}


def synthetic_samples(n: int, seed: int = 0, max_regions: int = 3) -> list[dict]:
    """``n`` training samples (image, caption tokens, 0..max_regions sub-images, image id); pairs of samples
    share an image id, like two captions of one image."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        k = int(torch.randint(0, max_regions + 1, (1,), generator=gen))
        tokens = torch.randint(1, 49000, (CONTEXT,), generator=gen)
        tokens[int(torch.randint(4, CONTEXT, (1,), generator=gen))] = 49407  # an EOT token somewhere
        samples.append({"image": torch.randn(IMAGE, generator=gen), "text": tokens,
                        "regions": torch.randn(k, *IMAGE, generator=gen), "id": i // 2})
    return samples


def collate(samples: list[dict]) -> dict:
    return {"images": torch.stack([s["image"] for s in samples]),
            "texts": torch.stack([s["text"] for s in samples]),
            "perspectives": PackedPerspectives.from_list([s["regions"] for s in samples], IMAGE),
            "ids": torch.tensor([s["id"] for s in samples])}


class ShardLoader:
    """Deterministic loader of the engine's contract: global batches of ``global_batch`` samples in an
    order fixed by (seed, epoch), this rank's contiguous slice of each, cut into micro-batches."""

    def __init__(self, samples: list[dict], global_batch: int, plan: LoaderPlan, fail_at: int | None = None):
        gen = torch.Generator().manual_seed(plan.seed * 1000 + plan.epoch)
        order = torch.randperm(len(samples), generator=gen).tolist()
        per_rank = global_batch // plan.world_size
        self.micro = []
        for start in range(0, len(order) - global_batch + 1, global_batch):
            mine = order[start + plan.rank * per_rank: start + (plan.rank + 1) * per_rank]
            for m in range(0, per_rank, plan.micro_batch_size):
                self.micro.append([samples[i] for i in mine[m:m + plan.micro_batch_size]])
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.micro)

    def __iter__(self):
        for i, chunk in enumerate(self.micro):
            if i == self.fail_at:
                raise RuntimeError("simulated crash")
            yield collate(chunk)


def run_context(run_dir: Path, seed: int = 0) -> RunContext:
    return RunContext(run_dir=Path(run_dir), cache_dir=Path(run_dir) / "cache", seed=seed, device="cpu",
                      normalization="none", log=logging.getLogger("rsitr-test"), progress=False)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
