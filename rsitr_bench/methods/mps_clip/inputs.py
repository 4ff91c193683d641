"""MPS-CLIP's samples: an image, its perspective sub-images and (in training) a caption, as encoder input.

The sub-images are cut from the full-resolution decoded image (rsitr_bench/training/image_cache.py) by
:func:`~rsitr_bench.guidance.crops.crop_perspectives` when the sample is built, in a DataLoader worker, so
no split's crops are ever held in memory; the whole image's view comes from the view cache when it is not
randomly augmented on the CPU (:meth:`~rsitr_bench.training.clip_training.ImageViews.image`), and an image
without perspectives is then never read at full resolution. A micro-batch leaves the workers as plain uint8 tensors (its
sub-images concatenated, with their counts per image), which pin and copy as they are; :class:`OnDevice`
packs them into :class:`~rsitr_bench.methods.mps_clip.packing.PackedPerspectives` on the training device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rsitr_bench.guidance.context import Perspective
from rsitr_bench.guidance.crops import CropMode, crop_perspectives
from rsitr_bench.methods.mps_clip.packing import PackedPerspectives
from rsitr_bench.training.clip_training import ImageViews
from rsitr_bench.training.engine import move_to
from rsitr_bench.training.image_cache import ImageBank


class ImageSamples:
    """Image ``i`` → ``{"pixels": [3, S, S], "subs": [n_i, 3, S, S]}`` (uint8), its views in that order.

    With CPU augmentation each view is augmented in turn, under the sample's seed (rsitr_bench/training/loader.py).
    """

    def __init__(self, bank: ImageBank, perspectives: Sequence[Sequence[Perspective]], crop_mode: CropMode,
                 views: ImageViews):
        self.bank, self.perspectives, self.crop_mode, self.views = bank, perspectives, crop_mode, views

    def __call__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = self.views.image(self.bank, index)
        found = self.perspectives[index]
        crops = crop_perspectives(self.bank[index], found, self.crop_mode) if found else []
        subs = torch.stack([self.views.cpu(c) for c in crops]) if crops else pixels.new_zeros(0, *pixels.shape)
        return {"pixels": pixels, "subs": subs}


class CaptionSamples:
    """Training caption ``c`` → its image's :class:`ImageSamples` views, its tokens and its image id."""

    def __init__(self, images: ImageSamples, tokens: torch.Tensor):
        self.images, self.tokens = images, tokens
        self.owners = torch.from_numpy(images.bank.split.caption_image)

    def __call__(self, caption: int) -> dict[str, Any]:
        image = int(self.owners[caption])
        return {**self.images(image), "tokens": self.tokens[caption], "ids": image}


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack the images (and tokens, ids and seeds when present); concatenate the sub-images with their
    counts, the layout of :class:`PackedPerspectives`."""
    batch = {"pixels": torch.stack([s["pixels"] for s in samples]),
             "subs": torch.cat([s["subs"] for s in samples]),
             "counts": torch.tensor([s["subs"].shape[0] for s in samples], dtype=torch.int64)}
    for key, make in (("tokens", torch.stack), ("ids", torch.tensor), ("seed", torch.tensor)):
        if key in samples[0]:
            batch[key] = make([s[key] for s in samples])
    return batch


class OnDevice:
    """A collated batch on the training device: pixels finished there, sub-images packed."""

    def __init__(self, views: ImageViews, device: torch.device):
        self.views, self.device = views, device

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        seeds = batch.pop("seed").tolist() if "seed" in batch else []
        counts = batch["counts"].tolist()
        batch = move_to(batch, self.device)
        pixels, subs = self.views.finish(batch.pop("pixels"), seeds, batch.pop("subs"), counts)
        counts_on_device = batch.pop("counts")
        owner = torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts_on_device,
                                        output_size=subs.shape[0])
        return {**batch, "pixels": pixels, "packed": PackedPerspectives(subs, owner, counts_on_device)}
