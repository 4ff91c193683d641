"""What every trainable CLIP method needs around the engine: training samples, image views and encoders.

Kept apart from the methods so ``full-ft`` and ``mps-clip`` share one definition of "a training sample"
(one caption and its image; other captions of the same image are positives through ``ids``), one way of
turning an image into encoder input, and one way of encoding a split for scoring.

An image becomes encoder input in two halves (:class:`ImageViews`). Where the sample is built (a DataLoader
worker; rsitr_bench/training/loader.py), the decoded image (rsitr_bench/training/image_cache.py) goes through
the PIL part of the backbone's transform (resize, centre crop) and, with ``augment_on: cpu``, the random
augmentation, and leaves as a uint8 tensor: a quarter of the bytes of float32 to pin and copy. Without random
augmentation on the CPU that half is the same every time, so its result is cached (:meth:`ImageViews.image`),
keyed by the image's bytes and the transform's settings (:func:`view_settings`). On the training device, the
batch is scaled to [0, 1] and normalised, exactly as the backbone's ``ToTensor`` and ``Normalize`` would have
(bit-identical on the CPU), after the random augmentation when ``augment_on: device``.

``augment_on: device`` moves the augmentation's arithmetic to the accelerator, using torchvision.transforms.v2
on tensors with each sample's own seed; it is not bit-identical to the PIL path (docs/performance.md, "Input
pipeline"): the CPU feeds every image already resized and centre-cropped to the input size S, so the random
crop is cut from that S×S image and resized back up (the PIL path cuts it from the native-resolution image),
and torch's bicubic resize and RandAugment ops round differently from PIL's.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from rsitr_bench.clip.backbones import BackboneOptions
from rsitr_bench.clip.encode import embed_batches
from rsitr_bench.training.engine import BatchSize, move_to
from rsitr_bench.training.image_cache import ImageBank
from rsitr_bench.training.loader import indexed_batches, seeded

Augmentation = Literal["none", "crop-flip", "randaugment"]
AugmentOn = Literal["cpu", "device"]
EpochSamples = Literal["captions", "images"]
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)


@dataclass
class ClipTrainingOptions(BackboneOptions):
    """Options shared by the trainable CLIP methods, besides the backbone.

    Attributes:
        augment: ``none``, ``crop-flip`` or ``randaugment`` (see :func:`train_transform`).
        augment_on: ``cpu`` (PIL, in the DataLoader workers) or ``device`` (torchvision.transforms.v2 on the
            training device; not bit-identical to ``cpu``, module docstring). A method option rather than a
            ``train`` one because, like ``augment``, it changes the samples the model sees.
        epoch_samples: ``images`` (each image once per epoch, with a random caption) or ``captions`` (every
            caption once, the reference's epoch).
        encode_batch_size: batch size when scoring a split.
    """

    augment: Augmentation = "none"
    augment_on: AugmentOn = "cpu"
    epoch_samples: EpochSamples = "images"
    encode_batch_size: BatchSize = 128


def train_transform(preprocess: Any, augment: str) -> Any:
    """The backbone's eval transform, optionally preceded by random augmentation of the PIL image.

    ``crop-flip`` is the geometric part of the reference recipe (RandomResizedCrop scale 0.5–1, horizontal
    flip; docs/mps-clip.md §5); ``randaugment`` adds torchvision's RandAugment with 2 ops at magnitude 7,
    filling with grey 128 as the reference does (its op set and magnitude scale differ, §5). Both are off by
    default for synthetic-rs, whose captions state left and right.
    """
    if augment == "none":
        return preprocess
    _check_augment(augment)
    size = _image_size(preprocess)
    steps = [T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
             T.RandomHorizontalFlip()]
    if augment == "randaugment":
        steps.append(T.RandAugment(num_ops=2, magnitude=7, fill=[128, 128, 128]))
    return T.Compose([*steps, preprocess])


def device_transform(augment: str, size: int) -> v2.Compose:
    """:func:`train_transform`'s augmentation as torchvision.transforms.v2 ops on a uint8 ``[3, S, S]`` tensor
    on any device (its random parameters are drawn from the CPU RNG, which :func:`seeded` seeds)."""
    _check_augment(augment)
    steps = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=v2.InterpolationMode.BICUBIC,
                                  antialias=True),
             v2.RandomHorizontalFlip()]
    if augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=7, fill=128))
    return v2.Compose(steps)


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")


def view_settings(geometry: Any) -> str | None:
    """A stable text naming a deterministic PIL transform and the code behind it, the view cache's key
    (:meth:`~rsitr_bench.training.image_cache.ImageCache.view_key`): each step's qualified name, the version of
    the package it comes from and its public attributes (size, interpolation, crop, ...).

    None when a step cannot be named stably (a lambda, a closure, a value whose text holds a memory address,
    an object without a ``__dict__`` to read its settings from): such views are never cached, rather than
    risk two different transforms sharing an entry.
    """
    parts = []
    for step in getattr(geometry, "transforms", [geometry]):
        code = step if isinstance(step, types.FunctionType) else type(step)
        if code is not step and not hasattr(step, "__dict__"):
            return None
        package = sys.modules.get(code.__module__.partition(".")[0])
        attributes = {} if code is step else {k: v for k, v in vars(step).items()
                                              if not k.startswith("_") and k != "training"}
        parts.append([f"{code.__module__}.{code.__qualname__}", getattr(package, "__version__", None), attributes])
    text = json.dumps(parts, sort_keys=True, default=repr)
    return None if any(mark in text for mark in ("<locals>", "<lambda>", " at 0x")) else text


def _image_size(preprocess: Any) -> int:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if size is not None:
            return size if isinstance(size, int) else size[0]
    raise ValueError("cannot find the image size of the backbone's transform")


@dataclass(frozen=True)
class PixelPipeline:
    """A backbone's eval transform cut at its ``ToTensor``: ``geometry`` (the PIL steps before it) and the
    scaling and normalisation after it, applied to a uint8 batch wherever it lives."""

    geometry: Any
    size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def of(cls, preprocess: Any) -> PixelPipeline:
        """Split an open_clip-style ``Compose([...PIL steps, ToTensor, Normalize?])``."""
        steps = list(getattr(preprocess, "transforms", []))
        cut = next((i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)), None)
        after = steps[cut + 1:] if cut is not None else []
        if cut is None or len(after) > 1 or (after and not isinstance(after[0], T.Normalize)):
            raise ValueError(f"cannot split the backbone's transform {preprocess!r} into PIL steps, ToTensor and "
                             f"an optional Normalize; the input pipeline needs that form (open_clip's)")
        norm = after[0] if after else None
        geometry = T.Compose(steps[:cut])
        return cls(geometry, _image_size(geometry), tuple(map(float, norm.mean)) if norm else None,
                   tuple(map(float, norm.std)) if norm else None)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` to the encoder's float32 input: ``ToTensor``'s ``/255`` then ``Normalize``,
        the same operations in the same order (so the same bits on the CPU)."""
        x = pixels.to(torch.float32).div(255)
        if self.mean is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x.sub_(mean).div_(std)


class ImageViews:
    """How an image or a sub-image (a *view*) becomes encoder input: :meth:`image` or :meth:`cpu` where the
    sample is built, :meth:`finish` on the batch on the training device (module docstring).

    Arguments:
        preprocess: the backbone's eval transform (see :class:`PixelPipeline`).
        augment: the training augmentation; ``none`` for scoring.
        augment_on: ``cpu`` or ``device``.

    ``cache_settings`` is the view cache's key (:func:`view_settings`) when the CPU half is deterministic (no
    augmentation there), else None.
    """

    def __init__(self, preprocess: Any, augment: str = "none", augment_on: str = "cpu"):
        if augment_on not in get_args(AugmentOn):
            raise ValueError(f"augment_on={augment_on!r}; choose one of {get_args(AugmentOn)}")
        self.pixels = PixelPipeline.of(preprocess)
        on_device = augment_on == "device" and augment != "none"
        self.cpu_transform = self.pixels.geometry if on_device else train_transform(self.pixels.geometry, augment)
        self.device_transform = device_transform(augment, self.pixels.size) if on_device else None
        deterministic = self.cpu_transform is self.pixels.geometry
        self.cache_settings = view_settings(self.pixels.geometry) if deterministic else None

    @property
    def shape(self) -> tuple[int, int, int]:
        return 3, self.pixels.size, self.pixels.size

    def cpu(self, image: Image.Image) -> torch.Tensor:
        """One view as a uint8 ``[3, S, S]`` tensor (randomly augmented when ``augment_on`` is ``cpu``)."""
        return pil_to_tensor(self.cpu_transform(image))

    def image(self, bank: ImageBank, index: int) -> torch.Tensor:
        """:meth:`cpu` of image ``index`` of ``bank``. Without CPU augmentation the view is the same every time,
        so it is read from the view cache, already resized and cropped: one mapped file, no PIL image, no resize
        (computed and stored the first time)."""
        if self.cache_settings is None:
            return self.cpu(bank[index])
        return torch.from_numpy(bank.view(index, self.cache_settings, self._view_array))

    def _view_array(self, image: np.ndarray) -> np.ndarray:
        return self.cpu(Image.fromarray(image)).contiguous().numpy()

    def finish(self, images: torch.Tensor, seeds: Sequence[int] = (), subs: torch.Tensor | None = None,
               counts: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised float32 images (and sub-images) from uint8 ones, where they are.

        With device augmentation, sample i's views (``images[i]``, then its ``counts[i]`` consecutive
        sub-images) are augmented in turn under ``seeds[i]``, as :meth:`cpu` does in the sample builder.
        """
        if self.device_transform is not None:
            first = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]) if subs is not None else None
            for i, seed in enumerate(seeds):
                with seeded(seed):
                    images[i] = self.device_transform(images[i])
                    if first is not None:
                        for j in range(int(first[i]), int(first[i + 1])):
                            subs[j] = self.device_transform(subs[j])
        return self.pixels.normalize(images), None if subs is None else self.pixels.normalize(subs)


class CaptionSamples:
    """``full-ft``'s sample builder: caption ``c`` → the view of its image, its tokens and its image id.

    A class rather than a closure so that DataLoader workers started by spawn or forkserver can receive it.
    """

    def __init__(self, bank: ImageBank, views: ImageViews, tokens: torch.Tensor):
        self.bank, self.views, self.tokens = bank, views, tokens
        self.owners = torch.from_numpy(bank.split.caption_image)

    def __call__(self, caption: int) -> dict[str, Any]:
        image = int(self.owners[caption])
        return {"pixels": self.views.image(self.bank, image), "tokens": self.tokens[caption], "ids": image}


class OnDevice:
    """The training process's half of a micro-batch of (pixels, tokens, ids): move it to ``device`` (from
    pinned memory without blocking) and finish its pixels there (:meth:`ImageViews.finish`)."""

    def __init__(self, views: ImageViews, device: torch.device):
        self.views, self.device = views, device

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        seeds = batch.pop("seed").tolist()
        batch = move_to(batch, self.device)
        batch["pixels"], _ = self.views.finish(batch["pixels"], seeds)
        return batch


class _ImageOf:
    """Image ``i`` of a bank as a uint8 view (picklable, for scoring workers)."""

    def __init__(self, bank: ImageBank, views: ImageViews):
        self.bank, self.views = bank, views

    def __call__(self, index: int) -> torch.Tensor:
        return self.views.image(self.bank, index)


def encode_images_with(encode: Callable[[torch.Tensor], torch.Tensor], bank: ImageBank, views: ImageViews,
                       device: torch.device, batch_size: int, num_workers: int = 0) -> torch.Tensor:
    """L2-normalised embeddings of every image of a split, in order, with the model's current weights.

    The images are read and resized in ``num_workers`` DataLoader workers; the batches are those of
    :func:`~rsitr_bench.clip.encode.embed_batches`, so the features are the same whatever the worker count.
    """
    batches = indexed_batches(len(bank), _ImageOf(bank, views), batch_size, num_workers=num_workers,
                              pin_memory=device.type == "cuda")
    chunks = []
    with torch.no_grad():
        for pixels in batches:
            images, _ = views.finish(pixels.to(device, non_blocking=True))
            chunks.append(F.normalize(encode(images).float(), dim=-1).cpu())
    return torch.cat(chunks)


def encode_texts_with(encode: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, device: torch.device,
                      batch_size: int) -> torch.Tensor:
    """L2-normalised embeddings of tokenised captions, in order, with the model's current weights."""
    return embed_batches(tokens, lambda batch: encode(batch.to(device)), batch_size, to_cpu=True, inference=False)
