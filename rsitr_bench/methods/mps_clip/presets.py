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

Each preset is data: values over the ``mps-clip`` defaults (``MethodSpec.defaults``), checked against the very
same option declarations, so a preset cannot widen a field's type or range.
"""

from __future__ import annotations

from rsitr_bench.api import MethodSpec
from rsitr_bench.methods.mps_clip.method import MpsClip, MpsClipOptions, MpsClipTrain

SEARCH_SPACE = {
    "train.lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "method.bottleneck": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "method.mpr_heads": {"type": "categorical", "choices": [1, 2, 4, 8]},
    "method.lambda_mpc": {"type": "float", "low": 0.0, "high": 1.0},
    "method.lambda_mpt": {"type": "float", "low": 0.0, "high": 1.0},
}


#: The published HEAD configuration, as values over the ``mps-clip`` defaults.
HEAD = {
    "method": {"model": "ViT-B-32", "pretrained": "openai", "bottleneck": 128, "adapter_heads": 8,
               "augment": "crop-flip", "epoch_samples": "captions"},
    "train": {"lr": 4e-5, "epochs": 35},
}
#: The pre-restore configuration of the released checkpoints: HEAD with these values changed.
PRE_RESTORE = {
    "method": {**HEAD["method"], "pretrained": "laion2b_s34b_b79k", "variant": "parallel", "train_mpr": False,
               "loss": "pre_restore", "learn_temperature": True},
    "train": {**HEAD["train"], "lr": 4e-4},
}
#: The published, leaky test protocol on the ``mps-clip`` defaults.
AS_PUBLISHED = {"method": {"leaky_gallery": True}}


def _leaky_gallery(options: MpsClipOptions) -> bool:
    """``leaky_gallery: true`` (the as-published preset, or the eval presets of the released checkpoints)."""
    return options.leaky_gallery


def _spec(name: str, description: str, defaults: dict | None = None) -> MethodSpec:
    return MethodSpec(name=name, factory=MpsClip, options=MpsClipOptions, train_options=MpsClipTrain,
                      description=description, search_space=SEARCH_SPACE, reads_gallery_captions=_leaky_gallery,
                      defaults=defaults or {})


SPECS = [
    _spec("mps-clip", "MPS-CLIP (G²A adapters + MPR + hybrid loss), leak-free keyword-guided perspectives"),
    _spec("mps-clip-head", "MPS-CLIP, published HEAD configuration (ViT-B-32 / openai)", HEAD),
    _spec("mps-clip-pre-restore",
          "MPS-CLIP, pre-restore configuration of the released checkpoints (ViT-B-32 / laion2b)", PRE_RESTORE),
    _spec("mps-clip-as-published",
          "MPS-CLIP with the published LEAKY test protocol (non-compliant; for reproduction only)", AS_PUBLISHED),
]
