"""``mps-clip``: keyword-guided multi-perspective sub-image CLIP (arXiv 2601.18190), faithful and leak-free.

Training (docs/mps-clip.md §1-§5): a frozen CLIP with G²A adapters in both towers; for each training
caption, the global image g, the caption t and the image's keyword-guided sub-images, packed (never padded)
through the same encoder; their normalised mean r feeds the K-head MPR; the hybrid loss combines the base
contrastive and triplet terms with the multi-perspective ones. Model selection is on validation mR.

Scoring (docs/mps-clip.md §6.2): the gallery embedding fuses g with the sub-image mean, ``normalize(0.5·(g + r))``.

Where keywords come from is the difference between the published protocol and a deployable one. The
harness's guidance service builds them: training images (queries) may use their own captions
(``train_keywords``, e.g. ``rules``); val/test gallery images may not, and use ``gallery_keywords``
(``vocabulary``, picked by image-text similarity from a vocabulary learnt on the training captions). Only
``gallery_protocol: as-published`` (any preset may set it) reads gallery captions, and its results are
stamped non-compliant.

Training keywords are per image (the union over its captions) rather than per caption as in the reference;
each training caption then sees its image's perspectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rsitr_bench.api import FitSummary, RunContext
from rsitr_bench.clip.backbones import Backbone, resolve_weights_file, weights_provenance
from rsitr_bench.clip.features import similarity
from rsitr_bench.data.model import Split
from rsitr_bench.errors import ConfigError
from rsitr_bench.methods.full_ft import fit_summary
from rsitr_bench.methods.mps_clip import inputs
from rsitr_bench.methods.mps_clip.adapter import add_g2a_adapters, mark_trainable
from rsitr_bench.methods.mps_clip.losses import LossWeights, MPSCLIPLoss
from rsitr_bench.methods.mps_clip.mpr import MPR, NoMPR
from rsitr_bench.methods.mps_clip.packing import (
    encode_packed,
    fuse_for_scoring,
    regions_or_global,
)
from rsitr_bench.methods.mps_clip.reference_checkpoint import (
    ReferenceCheckpoint,
    load_reference_weights,
    options_for_checkpoint,
    read_reference_checkpoint,
    reference_backbone,
)
from rsitr_bench.training.clip_training import ClipTrainingOptions, ImageViews, encode_texts_with
from rsitr_bench.training.engine import BatchSize, Engine, Epochs, LearningRate, TrainConfig
from rsitr_bench.training.image_cache import ImageBank, ImageCache
from rsitr_bench.training.loader import TrainLoader, indexed_batches, loader_settings

#: Sub-images one optimiser step may push through the encoder; beyond it a step cannot fit in memory.
MAX_SUBIMAGES_PER_STEP = 8192
#: A count of at least one (adapter width and heads, MPR heads K, sub-images per image).
Positive = Annotated[int, Field(ge=1)]


@dataclass
class MpsClipOptions(ClipTrainingOptions):
    """MPS-CLIP options. Defaults suit the embedded backbone; the presets set the published values.

    The backbone and training-data fields come from ``ClipTrainingOptions``.

    Attributes:
        variant: ``serial`` (HEAD: adapter after every block, both towers) or ``parallel`` (pre-restore).
        bottleneck, adapter_heads: adapter width b and its attention heads (published: 128, 8).
        ga_double_residual: reproduce the reference's doubled GA residual (a bug; off).
        mpr_heads: K, the number of MPR heads (published: 4). mpr_mlp: two-layer heads.
        mpr_without_regions: the MPR input of an image without sub-images: ``global`` (g, as HEAD) or
            ``zero`` (r = 0, as pre-restore; set only to reproduce its checkpoints).
        train_mpr: HEAD trains the MPR; the pre-restore recipe leaves it frozen.
        loss: published loss combination, ``head`` or ``pre_restore``; lambda_con, lambda_tri, lambda_mpc and
            lambda_mpt override the weight of one term each (0 removes the term; not all four may be 0).
        adapters, mpr, test_fusion: ablation switches (``rsitr-bench ablate``). ``adapters: false`` leaves the
            backbone frozen and unadapted; since the MPR never scores (docs/mps-clip.md §6.2), nothing the
            scores use would train, so ``fit`` refuses it: score it with ``rsitr-bench eval``. ``mpr: false``
            removes the MPR: the one perspective vector is r itself. ``test_fusion``: the gallery embedding
            is ``fused`` (normalize(0.5·(g + r)), docs/mps-clip.md §6.2) or ``global`` (g alone).
        same_image_positives: treat other captions of the same image as positives in every term (a fix of
            the reference's inconsistent triplet negatives); False reproduces the reference.
        train_keywords, gallery_keywords, perspectives: keyword providers and perspective generator
            (``dense-clip``: the deployable generator that localises best, docs/guidance.md).
        max_perspectives: sub-images per image (keywords kept per image); ``None`` keeps all, as the
            reference does. Uncapped, the sub-images of one step are checked against
            ``MAX_SUBIMAGES_PER_STEP`` once the training perspectives are known.
        crop_mode: ``crop`` (box crops) or ``masked`` (whole image, black outside the mask, as published).
        gallery_protocol: ``compliant`` (gallery keywords never read a val/test caption) or ``as-published``
            (val/test gallery keywords from the images' own captions, the reference's leaky test protocol);
            the latter is stamped ``leakage_audit: fail (as published)`` and never ranked.

    ``checkpoint`` may also be a file of the reference implementation: it is then loaded whole (adapters and
    MPR included, see ``reference_checkpoint``), and the options it requires are set from it.
    """

    variant: Literal["serial", "parallel"] = "serial"
    bottleneck: Positive = 32
    adapter_heads: Positive = 4
    ga_double_residual: bool = False
    mpr_heads: Positive = 4
    mpr_mlp: bool = True
    mpr_without_regions: Literal["global", "zero"] = "global"
    train_mpr: bool = True
    loss: Literal["head", "pre_restore"] = "head"
    lambda_con: Annotated[float, Field(ge=0)] | None = None
    lambda_tri: Annotated[float, Field(ge=0)] | None = None
    lambda_mpc: Annotated[float, Field(ge=0)] | None = None
    lambda_mpt: Annotated[float, Field(ge=0)] | None = None
    adapters: bool = True
    mpr: bool = True
    test_fusion: Literal["fused", "global"] = "fused"
    temperature: Annotated[float, Field(gt=0)] = 0.07
    learn_temperature: bool = False
    same_image_positives: bool = True
    train_keywords: str = "rules"
    gallery_keywords: str = "vocabulary"
    perspectives: str = "dense-clip"
    keyword_options: dict | None = None
    perspective_options: dict | None = None
    max_perspectives: Positive | None = 3
    crop_mode: Literal["crop", "masked"] = "crop"
    gallery_protocol: Literal["compliant", "as-published"] = "compliant"

    def __post_init__(self) -> None:
        # The ranges are declared on the fields; this is the one rule that ties two of them together.
        if self.adapter_heads > 0 and self.bottleneck % self.adapter_heads:
            raise ValueError(f"bottleneck {self.bottleneck} must be a positive multiple of adapter_heads "
                             f"{self.adapter_heads}")
        self.loss_weights()  # all four lambdas at 0 leave no loss: refused here, before a run is recorded

    def loss_weights(self) -> LossWeights:
        """The published combination ``loss`` with the ``lambda_*`` overrides applied."""
        return LossWeights.published(self.loss).with_overrides(
            con=self.lambda_con, tri=self.lambda_tri, mpc=self.lambda_mpc, mpt=self.lambda_mpt)


@dataclass
class MpsClipTrain(TrainConfig):
    """Training defaults for the embedded backbone; the HEAD recipe is lr 4e-5, 35 epochs, batch 128.

    lr 3e-4 was chosen on synthetic-rs *validation* mR (46.5, against 46.45 untrained and a decline at 1e-3).
    """

    lr: LearningRate = 3e-4
    epochs: Epochs = 5
    batch_size: BatchSize = 128


class MpsClipNet(nn.Module):
    """CLIP with adapters plus the MPR: one forward pass gives every feature the loss needs.

    ``mpr`` is an :class:`MPR` or, in the ablation without it, :class:`NoMPR`; ``test_fusion`` is how
    :meth:`fuse` builds the gallery embedding when scoring.
    """

    def __init__(self, clip: nn.Module, mpr: MPR | NoMPR, without_regions: str = "global",
                 test_fusion: str = "fused"):
        super().__init__()
        self.clip, self.mpr = clip, mpr
        self.without_regions = without_regions
        self.test_fusion = test_fusion

    def fuse(self, g: torch.Tensor, r: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        """The gallery embedding: ``normalize(0.5·(g + r))`` (g without sub-images), or g alone (``global``)."""
        return g if self.test_fusion == "global" else fuse_for_scoring(g, r, has)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        g, r, has = encode_packed(self.clip.encode_image, batch["pixels"], batch["packed"])
        text = F.normalize(self.clip.encode_text(batch["tokens"]), dim=-1)
        # r is exactly 0 for an image without sub-images; "zero" feeds that to the MPR, as pre-restore did.
        regions = r if self.without_regions == "zero" else regions_or_global(g, r, has)
        return {"image": g, "text": text, "perspectives": self.mpr(regions), "ids": batch["ids"]}


class MpsClip:
    def __init__(self, options: MpsClipOptions, train: MpsClipTrain):
        # A reference-implementation checkpoint fixes some options (recorded in reference.info.overrides).
        self.reference: ReferenceCheckpoint | None = None
        if options.checkpoint:
            weights = resolve_weights_file(options.checkpoint)
            self.reference = read_reference_checkpoint(weights.path, source=weights.source, sha256=weights.sha256)
        if self.reference is not None:
            options = options_for_checkpoint(options, self.reference.info)
        self.options, self.train_config = options, train
        if options.max_perspectives is not None:
            self._check_step(options.max_perspectives, "max_perspectives")
        self._net: MpsClipNet | None = None
        self._backbone: Backbone | None = None
        self._guide: Backbone | None = None

    def _check_step(self, per_image: int, source: str) -> None:
        """Refuse a configuration whose worst step (``per_image`` sub-images for every sample) cannot fit."""
        per_step = per_image * self.train_config.batch_size
        if per_step > MAX_SUBIMAGES_PER_STEP:
            raise ConfigError(
                f"mps-clip: {source} {per_image} × batch_size {self.train_config.batch_size} = {per_step} "
                f"sub-images per step, more than the {MAX_SUBIMAGES_PER_STEP} one step can encode; "
                f"set method.max_perspectives or lower train.batch_size.")

    # --------------------------------------------------------------------------------------- model

    def _build(self, device: str) -> MpsClipNet:
        if self._net is None:
            o = self.options
            self._backbone = o.build_backbone("cpu") if self.reference is None else \
                reference_backbone(o.model, self.reference)
            clip = self._backbone.model
            if o.adapters:
                add_g2a_adapters(clip, o.variant, bottleneck=o.bottleneck, heads=o.adapter_heads,
                                 ga_double_residual=o.ga_double_residual)
            mpr = MPR(clip.visual.output_dim, o.mpr_heads, o.mpr_mlp) if o.mpr else NoMPR()
            self._net = MpsClipNet(clip, mpr, o.mpr_without_regions, o.test_fusion)
            if self.reference is not None:
                load_reference_weights(self._net, self.reference)
            mark_trainable(self._net, train_mpr=o.train_mpr)
            self._net.to(device)
        return self._net

    def network(self, device: str = "cpu") -> MpsClipNet:
        """The model with its weights loaded, as ``fit`` and ``score`` use it (for checks outside a run)."""
        return self._build(device)

    def _guidance_backbone(self) -> Backbone:
        """A separate, frozen copy of the pretrained backbone: perspectives must not drift with training.
        From a reference checkpoint, that is its CLIP without adapters."""
        if self._guide is None:
            self._guide = self.options.build_backbone("cpu") if self.reference is None else \
                reference_backbone(self.options.model, self.reference)
        return self._guide

    # -------------------------------------------------------------------------------- perspectives

    def _subimages(self, split: Split, ctx: RunContext) -> tuple[list[list[Any]], dict]:
        """The perspectives of every image of ``split``, from the run's guidance service (their sub-images
        are cut from the full-resolution image when a sample is built: methods/mps_clip/inputs.py)."""
        o = self.options
        if ctx.guidance is None:
            raise ConfigError("mps-clip needs the harness's guidance service (run it through rsitr-bench run)")
        _, role = ctx.guidance.role_of(split)
        keywords = o.train_keywords if role == "query" or o.gallery_protocol == "as-published" \
            else o.gallery_keywords
        result = ctx.guidance.perspectives(
            split, keywords=keywords, generator=o.perspectives, backbone=self._guidance_backbone,
            keyword_options=o.keyword_options, generator_options=o.perspective_options,
            max_per_image=o.max_perspectives, with_masks=o.crop_mode == "masked")
        found = [list(p) if p else [] for p in result.perspectives]
        return found, {"keywords": keywords, "stats": result.stats, "config": result.config}

    # ------------------------------------------------------------------------------------- training

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> FitSummary:
        if train is None:
            raise ValueError("mps-clip needs a training split")
        o = self.options
        if not o.adapters:
            raise ConfigError(
                "mps-clip with method.adapters=false has nothing to train that its scores use: the backbone is "
                "frozen and the MPR is used in training only (docs/mps-clip.md §6.2). Score it without training: "
                "`rsitr-bench eval --method mps-clip --set method.adapters=false`.")
        net = self._build(ctx.device)
        backbone = self._backbone
        found, guidance = self._subimages(train, ctx)
        if o.max_perspectives is None:
            self._check_step(max(map(len, found), default=0), "uncapped max_perspectives: up to")
        views = ImageViews(backbone.preprocess, o.augment, o.augment_on)
        images = inputs.ImageSamples(ImageBank(train, ImageCache(ctx.cache_dir)), found, o.crop_mode, views)
        build = inputs.CaptionSamples(images, backbone.tokenizer(ctx.texts(train)))

        loss = MPSCLIPLoss(o.loss_weights(), temperature=o.temperature, learn_temperature=o.learn_temperature,
                           mpc_scale=float(net.clip.logit_scale.exp()),
                           same_image_positives=o.same_image_positives)
        evaluate = (lambda model, which: ctx.evaluate(val)) if val is not None else None
        engine = Engine(self.train_config, ctx)
        with TrainLoader(train.caption_image, build, per_epoch=o.epoch_samples, collate=inputs.collate,
                         prepare=inputs.OnDevice(views, engine.device),
                         **loader_settings(self.train_config, engine.device)) as batches:
            summary = engine.fit(net, batches, loss, evaluate)
        reference = {"reference_checkpoint": self.reference.info.to_dict()} if self.reference is not None else {}
        return fit_summary(summary, guidance_train=guidance, **reference)

    # -------------------------------------------------------------------------------------- scoring

    def score(self, split: Split, ctx: RunContext) -> np.ndarray | torch.Tensor:
        net = self._build(ctx.device)
        backbone = self._backbone
        # g alone (test_fusion: global) needs no gallery perspectives: none is generated, none is recorded.
        found = self._subimages(split, ctx)[0] if self.options.test_fusion == "fused" else \
            [[] for _ in range(split.n_images)]
        images = inputs.ImageSamples(ImageBank(split, ImageCache(ctx.cache_dir)), found, self.options.crop_mode,
                                     ImageViews(backbone.preprocess))
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        bs = self.options.encode_batch_size
        try:
            gallery = self._encode_gallery(net, images, device, bs, self.train_config.num_workers)
            texts = encode_texts_with(net.clip.encode_text, backbone.tokenizer(ctx.texts(split)), device, bs)
        finally:
            net.train(was_training)
        return similarity(gallery, texts, device)

    @staticmethod
    def _encode_gallery(net: MpsClipNet, images: inputs.ImageSamples, device: torch.device, batch_size: int,
                        num_workers: int) -> torch.Tensor:
        out = []
        on_device = inputs.OnDevice(images.views, device)
        batches = indexed_batches(len(images.bank), images, batch_size, collate=inputs.collate,
                                  num_workers=num_workers, pin_memory=device.type == "cuda")
        with torch.no_grad():
            for batch in map(on_device, batches):
                pixels, packed = batch["pixels"], batch["packed"]
                g, r, has = encode_packed(net.clip.encode_image, pixels, packed)
                out.append(net.fuse(g, r, has).float().cpu())
        return torch.cat(out)

    def weights_provenance(self) -> dict[str, Any]:
        reference = {"reference_checkpoint": self.reference.info.to_dict()} if self.reference is not None else {}
        return {**weights_provenance(self._backbone), **reference}

    def parameter_counts(self) -> dict[str, int]:
        if self._net is None:
            return {}
        params = list(self._net.parameters())
        return {"total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad)}
