"""The registered MPS-CLIP configurations.

``mps-clip`` is the compliant method with defaults sized for the embedded backbone. The other names pin a
published configuration (docs/mps-clip.md §2.6, §5) so it can be reproduced by name:

* ``mps-clip-head``: HEAD 694ea6f: serial G²A in both towers, trained MPR, L_con + 0.2·L_MPC + L_tri +
  0.2·L_MPT, fixed τ = 0.07, lr 4e-5, 35 epochs, global batch 128, OpenAI ViT-B/32.
* ``mps-clip-pre-restore``: the code the released checkpoints match: parallel G²A (GA in the text tower
  only), frozen MPR, ½ of every term, learnable τ, lr 4e-4, LAION-2B ViT-B/32 (inferred initialisation).
* ``mps-clip-as-published``: the published *test protocol*: gallery keywords from each val/test image's own
  captions. It leaks the answer into the gallery; every result is stamped ``leakage_audit: fail (as
  published)`` and never ranked with compliant runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsitr_bench.api import MethodSpec
from rsitr_bench.methods.mps_clip.method import MpsClip, MpsClipOptions, MpsClipTrain

SEARCH_SPACE = {
    "train.lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "method.bottleneck": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "method.mpr_heads": {"type": "categorical", "choices": [1, 2, 4, 8]},
    "method.lambda_mpc": {"type": "float", "low": 0.0, "high": 1.0},
    "method.lambda_mpt": {"type": "float", "low": 0.0, "high": 1.0},
}


@dataclass
class HeadOptions(MpsClipOptions):
    model: str = "ViT-B-32"
    pretrained: str | None = "openai"
    bottleneck: int = 128
    adapter_heads: int = 8
    augment: str = "crop-flip"
    epoch_samples: str = "captions"


@dataclass
class HeadTrain(MpsClipTrain):
    lr: float = 4e-5
    epochs: int = 35


@dataclass
class PreRestoreOptions(HeadOptions):
    pretrained: str | None = "laion2b_s34b_b79k"
    variant: str = "parallel"
    train_mpr: bool = False
    loss: str = "pre_restore"
    learn_temperature: bool = True


@dataclass
class PreRestoreTrain(HeadTrain):
    lr: float = 4e-4


@dataclass
class AsPublishedOptions(MpsClipOptions):
    leaky_gallery: bool = True


def _spec(name: str, options: type, train: type, description: str) -> MethodSpec:
    return MethodSpec(name=name, factory=MpsClip, options=options, train_options=train, description=description,
                      search_space=SEARCH_SPACE)


SPECS = [
    _spec("mps-clip", MpsClipOptions, MpsClipTrain,
          "MPS-CLIP (G²A adapters + MPR + hybrid loss), leak-free keyword-guided perspectives"),
    _spec("mps-clip-head", HeadOptions, HeadTrain, "MPS-CLIP, published HEAD configuration (ViT-B-32 / openai)"),
    _spec("mps-clip-pre-restore", PreRestoreOptions, PreRestoreTrain,
          "MPS-CLIP, pre-restore configuration of the released checkpoints (ViT-B-32 / laion2b)"),
    _spec("mps-clip-as-published", AsPublishedOptions, MpsClipTrain,
          "MPS-CLIP with the published LEAKY test protocol (non-compliant; for reproduction only)"),
]
