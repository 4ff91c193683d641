"""``full-ft``: full fine-tuning of CLIP with the symmetric multi-positive InfoNCE loss.

The strongest simple baseline of the RSITR tables ("Full-FT CLIP", 151 M trainable parameters on
ViT-B/32). Every parameter trains; other captions of the same image in the batch are positives, not
negatives. Model selection is on validation mR through the shared engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from rsitr_bench.api import FitSummary, MethodSpec, RunContext
from rsitr_bench.clip.backbones import Backbone, weights_provenance
from rsitr_bench.clip.features import similarity
from rsitr_bench.data.model import Split
from rsitr_bench.methods.mps_clip.losses import LossWeights, MPSCLIPLoss
from rsitr_bench.training.clip_training import (
    CaptionSamples,
    ClipTrainingOptions,
    ImageViews,
    OnDevice,
    encode_images_with,
    encode_texts_with,
)
from rsitr_bench.training.engine import BatchSize, Engine, Epochs, LearningRate, TrainConfig, TrainSummary
from rsitr_bench.training.image_cache import ImageBank, ImageCache
from rsitr_bench.training.loader import TrainLoader, loader_settings


@dataclass
class FullFtOptions(ClipTrainingOptions):
    """Backbone and training-data options (see ``ClipTrainingOptions``) plus the contrastive temperature."""

    temperature: Annotated[float, Field(gt=0)] = 0.07
    learn_temperature: bool = True


@dataclass
class FullFtTrain(TrainConfig):
    """Training defaults sized for the embedded backbone; set lr around 1e-5 for ViT-B-32."""

    lr: LearningRate = 5e-5
    epochs: Epochs = 8
    batch_size: BatchSize = 128


class ClipPairs(nn.Module):
    """The engine's forward contract: a micro-batch of (pixels, tokens, ids) -> normalised features."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = nn.functional.normalize(self.clip.encode_image(batch["pixels"]), dim=-1)
        text = nn.functional.normalize(self.clip.encode_text(batch["tokens"]), dim=-1)
        return {"image": image, "text": text, "ids": batch["ids"]}


def fit_summary(summary: TrainSummary, **extra: Any) -> FitSummary:
    """The engine's summary as the run's result stamps it (``extra``: more details of the method's own)."""
    record = summary.to_dict()
    label, selected_on = record.pop("selection"), record.pop("selected_on")
    return FitSummary(selected_on, label, {"best_epoch": record.pop("best_epoch"), "train": record, **extra})


class FullFineTune:
    def __init__(self, options: FullFtOptions, train: FullFtTrain):
        self.options, self.train_config = options, train
        self._backbone: Backbone | None = None

    def backbone(self, device: str) -> Backbone:
        if self._backbone is None:
            self._backbone = self.options.build_backbone(device)
            self._backbone.model.requires_grad_(True)
        return self._backbone

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> FitSummary:
        if train is None:
            raise ValueError("full-ft needs a training split")
        backbone = self.backbone(ctx.device)
        o = self.options
        views = ImageViews(backbone.preprocess, o.augment, o.augment_on)
        build = CaptionSamples(ImageBank(train, ImageCache(ctx.cache_dir)), views,
                               backbone.tokenizer(ctx.texts(train)))
        loss = MPSCLIPLoss(LossWeights(con=1.0, tri=0.0, mpc=0.0, mpt=0.0), temperature=o.temperature,
                           learn_temperature=o.learn_temperature)
        evaluate = (lambda model, which: ctx.evaluate(val)) if val is not None else None
        engine = Engine(self.train_config, ctx)
        with TrainLoader(train.caption_image, build, per_epoch=o.epoch_samples, prepare=OnDevice(views, engine.device),
                         **loader_settings(self.train_config, engine.device)) as batches:
            summary = engine.fit(ClipPairs(backbone.model), batches, loss, evaluate)
        return fit_summary(summary)

    def score(self, split: Split, ctx: RunContext) -> np.ndarray | torch.Tensor:
        backbone = self.backbone(ctx.device)
        model = backbone.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        bs = self.options.encode_batch_size
        try:
            images = encode_images_with(model.encode_image, ImageBank(split, ImageCache(ctx.cache_dir)),
                                        ImageViews(backbone.preprocess), device, bs, self.train_config.num_workers)
            texts = encode_texts_with(model.encode_text, backbone.tokenizer(ctx.texts(split)), device, bs)
        finally:
            model.train(was_training)
        return similarity(images, texts, device)

    def parameter_counts(self) -> dict[str, int]:
        if self._backbone is None:
            return {}
        params = list(self._backbone.model.parameters())
        return {"total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad)}

    def weights_provenance(self) -> dict[str, Any]:
        return weights_provenance(self._backbone)


SPEC = MethodSpec(
    name="full-ft",
    factory=FullFineTune,
    options=FullFtOptions,
    train_options=FullFtTrain,
    description="Full fine-tuning of CLIP with symmetric multi-positive InfoNCE; selection on validation.",
    search_space={"train.lr": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True}},
)
