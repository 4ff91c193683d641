"""What every trainable CLIP method needs around the engine: batches of (image, caption) pairs and encoders.

Kept apart from the methods so ``full-ft`` and ``mps-clip`` share one definition of "a training sample"
(one caption and its image; other captions of the same image are positives through ``ids``) and one way of
encoding a split for scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from rsitr_bench.clip.backbones import BackboneOptions
from rsitr_bench.clip.encode import embed_batches
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.training.engine import BatchSize, LoaderPlan

Augmentation = Literal["none", "crop-flip", "randaugment"]
EpochSamples = Literal["captions", "images"]
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
EPOCH_SAMPLES: tuple[str, ...] = get_args(EpochSamples)


@dataclass
class ClipTrainingOptions(BackboneOptions):
    """Options shared by the trainable CLIP methods, besides the backbone.

    Attributes:
        augment: ``none``, ``crop-flip`` or ``randaugment`` (see :func:`train_transform`).
        epoch_samples: ``images`` (each image once per epoch, with a random caption) or ``captions`` (every
            caption once, the reference's epoch).
        encode_batch_size: batch size when scoring a split.
    """

    augment: Augmentation = "none"
    epoch_samples: EpochSamples = "images"
    encode_batch_size: BatchSize = 128


class ImageBank:
    """Decoded RGB images of a split, loaded once: training revisits every image each epoch."""

    def __init__(self, split: Split):
        self.split = split
        self._images: dict[int, Image.Image] = {}

    def __getitem__(self, index: int) -> Image.Image:
        if index not in self._images:
            self._images[index] = load_rgb(Path(self.split.image_paths[index]),
                                           record=f"{self.split.dataset} {self.split.name} image {index}")
        return self._images[index]


def train_transform(preprocess: Any, augment: str) -> Any:
    """The backbone's eval transform, optionally preceded by random augmentation of the PIL image.

    ``crop-flip`` is the geometric part of the reference recipe (RandomResizedCrop scale 0.5–1, horizontal
    flip; docs/mps-clip.md §5); ``randaugment`` adds torchvision's RandAugment with 2 ops at magnitude 7,
    filling with grey 128 as the reference does (its op set and magnitude scale differ, §5). Both are off by
    default for synthetic-rs, whose captions state left and right.
    """
    if augment == "none":
        return preprocess
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")
    size = _image_size(preprocess)
    steps = [T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
             T.RandomHorizontalFlip()]
    if augment == "randaugment":
        steps.append(T.RandAugment(num_ops=2, magnitude=7, fill=[128, 128, 128]))
    return T.Compose([*steps, preprocess])


def _image_size(preprocess: Any) -> int:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if size is not None:
            return size if isinstance(size, int) else size[0]
    raise ValueError("cannot find the image size of the backbone's transform")


class CaptionBatches:
    """One epoch of this rank's micro-batches of training captions (incomplete ones dropped).

    ``per_epoch="captions"`` visits every caption once (the reference's epoch); ``"images"`` visits every
    image once with one of its captions drawn at random, five times cheaper per epoch on 5-caption data.
    The order is seeded by (seed, epoch) and identical on every rank; rank r takes every world_size-th
    sample, so ranks never share a sample.
    """

    def __init__(self, caption_image: np.ndarray, plan: LoaderPlan, build: Callable[[np.ndarray], dict[str, Any]],
                 per_epoch: str = "captions"):
        rng = np.random.default_rng([plan.seed, plan.epoch])
        if per_epoch == "captions":
            samples = rng.permutation(len(caption_image))
        elif per_epoch == "images":
            owned = np.argsort(caption_image, kind="stable")
            starts = np.searchsorted(caption_image[owned], np.arange(caption_image.max() + 1))
            counts = np.bincount(caption_image)
            pick = starts + (rng.random(len(counts)) * counts).astype(np.int64)
            samples = owned[pick][rng.permutation(len(counts))]
        else:
            raise ValueError(f"per_epoch={per_epoch!r}; choose one of {EPOCH_SAMPLES}")
        self.mine = samples[plan.rank::plan.world_size]
        self.micro = plan.micro_batch_size
        self.build = build

    def __len__(self) -> int:
        return len(self.mine) // self.micro

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for b in range(len(self)):
            yield self.build(self.mine[b * self.micro:(b + 1) * self.micro])


def encode_images_with(encode: Callable[[torch.Tensor], torch.Tensor], bank: ImageBank, preprocess: Any,
                       device: torch.device, batch_size: int) -> torch.Tensor:
    """L2-normalised embeddings of every image of a split, in order, with the model's current weights."""

    def encode_indices(idx: Sequence[int]) -> torch.Tensor:
        return encode(torch.stack([preprocess(bank[i]) for i in idx]).to(device))

    return embed_batches(range(bank.split.n_images), encode_indices, batch_size, to_cpu=True, inference=False)


def encode_texts_with(encode: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, device: torch.device,
                      batch_size: int) -> torch.Tensor:
    """L2-normalised embeddings of tokenised captions, in order, with the model's current weights."""
    return embed_batches(tokens, lambda batch: encode(batch.to(device)), batch_size, to_cpu=True, inference=False)
