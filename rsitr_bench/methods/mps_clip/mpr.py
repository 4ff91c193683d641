"""MPR, the Multi-Perspective Representation head of MPS-CLIP (docs/mps-clip.md §3).

K independent projection heads map the fused perspective embedding ``r`` (the normalised mean of the
sub-image embeddings, or ``g`` when an image has none) to K unit vectors ``v_1..v_K``. The losses take a
maximum over the heads (docs/mps-clip.md §4, MPC and MPT); the MPR is used in training only, never when
scoring (docs/mps-clip.md §6.2).

:class:`NoMPR` is the ablation without the MPR (``method.mpr: false``): the single perspective vector is ``r``
itself, so the multi-perspective losses compare the sub-image mean directly with the caption.
"""

from __future__ import annotations

import torch
from torch import nn


class MPR(nn.Module):
    """K projection heads, each ``Linear → GELU → Linear`` (``mlp=True``) or a single ``Linear``.

    Weights are Xavier-uniform and biases zero (docs/mps-clip.md §3). At dim 512 and K = 4 with ``mlp=True`` it holds
    4 × 525,312 = 2,101,248 parameters.
    """

    def __init__(self, dim: int = 512, heads: int = 4, mlp: bool = True, eps: float = 1e-8):
        super().__init__()
        if heads < 1:
            raise ValueError(f"MPR needs at least one projection head (K >= 1), got K={heads}; "
                             f"to train without the MPR, set method.mpr=false (NoMPR) instead")
        self.eps = eps
        self.heads = nn.ModuleList(self._head(dim, mlp) for _ in range(heads))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _head(dim: int, mlp: bool) -> nn.Module:
        if mlp:
            return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        return nn.Linear(dim, dim)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``[B, dim]`` → ``[B, K, dim]``, each ``v_k = h_k(r) / (‖h_k(r)‖₂ + eps)``."""
        v = torch.stack([head(r) for head in self.heads], dim=1)
        return v / (v.norm(dim=-1, keepdim=True) + self.eps)


class NoMPR(nn.Module):
    """The MPR removed: ``[B, dim]`` → ``[B, 1, dim]``, the one perspective being ``r`` as given (already unit
    length, or 0 for an image without sub-images under ``mpr_without_regions: zero``). No parameters."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r[:, None, :]
