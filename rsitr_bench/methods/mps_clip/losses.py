"""The MPS-CLIP training losses (docs/mps-clip.md §4).

Inputs are L2-normalised embeddings of one *global* batch (the engine gathers them across micro-batches
and ranks before calling the loss): ``image`` g ``[B, D]``, ``text`` t ``[B, D]``, ``perspectives``
v ``[B, K, D]`` (the MPR outputs) and ``ids`` ``[B]``, the positive-group id of each sample (its image's
index in the training split; sample i is the pair (image ids[i], caption i)).

Terms:

* base contrastive ``L_con`` — symmetric InfoNCE at temperature τ with soft multi-positive targets
  (every caption of the same image in the batch is a positive);
* weighted triplet ``L_tri`` — hinge costs re-weighted by ``(1 − e^{−c})^γ``, summed over all pairs;
* multi-perspective contrastive ``L_MPC`` — symmetric cross-entropy on ``s · max_k ⟨v_i^k, t_j⟩``;
* multi-perspective triplet ``L_MPT`` — the weighted triplet on ``max_k ⟨v_i^k, t_j⟩``;
* the hybrid ``Σ w·L`` with the two published weightings, see :class:`LossWeights`.

Bug 12 of docs/mps-clip.md §9: the reference treats other captions of the same image as positives in ``L_con`` but as
negatives in both triplet terms, and uses hard diagonal labels in ``L_MPC``. ``same_image_positives=True``
(the default) makes every term agree: same-image pairs are masked out of the triplet costs and ``L_MPC``
uses the same soft targets as ``L_con``. ``False`` reproduces the reference exactly, for legacy runs only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Reduce = Literal["max", "mean"]


def same_image(ids: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` boolean matrix, true where samples i and j belong to the same image."""
    return ids[:, None] == ids[None, :]


def symmetric_contrastive(logits: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """½ (row-wise + column-wise) cross-entropy of ``logits`` ``[B, B]`` against soft targets.

    The target of row i is uniform over the columns j with ``ids[j] == ids[i]`` (docs/mps-clip.md §4.1); without ``ids``
    it is the diagonal (hard ``arange`` labels). The same-image matrix is symmetric, so the column-wise
    direction uses the same targets.
    """
    if ids is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    pos = same_image(ids).to(logits.dtype)
    targets = pos / pos.sum(dim=1, keepdim=True)
    row = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    col = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (row + col)


def multi_positive_contrastive(image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor | None = None,
                               temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """``L_con`` (docs/mps-clip.md §4.1): logits ``⟨g_i, t_j⟩ / τ``, soft same-image targets; τ is clamped to ≥ 1e-3."""
    tau = torch.as_tensor(temperature, dtype=image.dtype, device=image.device).clamp(min=1e-3)
    return symmetric_contrastive(image @ text.t() / tau, ids)


def weighted_triplet(sim: torch.Tensor, margin: float = 0.2, gamma: float = 2.0,
                     ids: torch.Tensor | None = None, mask_same_image: bool = False) -> torch.Tensor:
    """Weighted triplet (docs/mps-clip.md §4.2) on a similarity matrix ``sim[i, j]`` (row: image i, column: text j).

    Costs ``c^t_ij = [m + S_ij − S_ii]_+`` (anchor image i, negative text j) and ``c^v_ij = [m + S_ij −
    S_jj]_+`` (anchor text j, negative image i), diagonal zeroed, re-weighted to ``(1 − e^{−c})^γ · c``
    (the weight is not detached), summed over all pairs: ``½ (Σ c^t + Σ c^v)``. No hard-negative mining.
    With ``mask_same_image`` (needs ``ids``) pairs of the same image are excluded from the negatives too.
    """
    diag = sim.diagonal()
    cost_t = (margin + sim - diag[:, None]).clamp(min=0)
    cost_v = (margin + sim - diag[None, :]).clamp(min=0)
    if mask_same_image:
        if ids is None:
            raise ValueError("mask_same_image=True needs the samples' image ids")
        negative = ~same_image(ids)
    else:
        negative = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    cost_t = cost_t.masked_fill(~negative, 0.0)
    cost_v = cost_v.masked_fill(~negative, 0.0)
    cost_t = (1 - torch.exp(-cost_t)).pow(gamma) * cost_t
    cost_v = (1 - torch.exp(-cost_v)).pow(gamma) * cost_v
    return 0.5 * (cost_t.sum() + cost_v.sum())


def perspective_similarity(perspectives: torch.Tensor, text: torch.Tensor,
                           reduce: Reduce = "max") -> torch.Tensor:
    """``S^mv_ij = max_k ⟨v_i^k, t_j⟩`` (or the mean over heads): ``[B, K, D] × [B, D] → [B, B]``
    (docs/mps-clip.md §4.3)."""
    per_head = torch.einsum("ikd,jd->ijk", perspectives, text)
    if reduce == "max":
        return per_head.amax(dim=-1)
    if reduce == "mean":
        return per_head.mean(dim=-1)
    raise ValueError(f"unknown perspective reduction {reduce!r}; choose 'max' or 'mean'")


def multi_perspective_contrastive(perspectives: torch.Tensor, text: torch.Tensor, scale: float,
                                  ids: torch.Tensor | None = None, reduce: Reduce = "max") -> torch.Tensor:
    """``L_MPC`` (docs/mps-clip.md §4.3): symmetric cross-entropy on ``scale · S^mv``; ``scale`` is CLIP's frozen
    ``exp(logit_scale)``. Hard diagonal labels without ``ids`` (reference), soft same-image targets with."""
    return symmetric_contrastive(scale * perspective_similarity(perspectives, text, reduce), ids)


def multi_perspective_triplet(perspectives: torch.Tensor, text: torch.Tensor, margin: float = 0.2,
                              gamma: float = 2.0, ids: torch.Tensor | None = None,
                              mask_same_image: bool = False, reduce: Reduce = "max") -> torch.Tensor:
    """``L_MPT`` (docs/mps-clip.md §4.4): :func:`weighted_triplet` on the perspective similarity ``S^mv``."""
    sim = perspective_similarity(perspectives, text, reduce)
    return weighted_triplet(sim, margin, gamma, ids, mask_same_image)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the hybrid loss ``w_con·L_con + w_tri·L_tri + w_mpc·L_MPC + w_mpt·L_MPT``.

    Published combinations (:meth:`published`):

    * ``head`` (HEAD, §4.5): ``L_con + 0.2·L_MPC + L_tri + 0.2·L_MPT``;
    * ``pre_restore`` (docs/mps-clip.md §4.6): uncertainty weighting whose scalars s were frozen at 0, which is exactly
      ``½ (L_con + L_MPC + L_tri + L_MPT)``.
    """

    con: float = 1.0
    tri: float = 1.0
    mpc: float = 0.2
    mpt: float = 0.2

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        negative = [f"{name}={value}" for name, value in values.items() if value < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {', '.join(negative)}")
        if not any(values.values()):
            raise ValueError("every loss weight is 0, so the loss is empty and nothing would train; keep at least "
                             "one of con, tri, mpc, mpt above 0")

    @classmethod
    def published(cls, name: str) -> LossWeights:
        if name == "head":
            return cls(con=1.0, tri=1.0, mpc=0.2, mpt=0.2)
        if name == "pre_restore":
            return cls(con=0.5, tri=0.5, mpc=0.5, mpt=0.5)
        raise ValueError(f"unknown published loss combination {name!r}; choose 'head' or 'pre_restore'")

    def with_overrides(self, **weights: float | None) -> LossWeights:
        """These weights with every given, non-None term replaced: how ``lambda_*`` options override a published
        combination, and how an ablation removes a term (weight 0: the term is not even computed)."""
        unknown = sorted(set(weights) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; the terms are con, tri, mpc, mpt")
        return replace(self, **{name: float(value) for name, value in weights.items() if value is not None})


class MPSCLIPLoss(nn.Module):
    """The hybrid MPS-CLIP loss over one global batch.

    Args:
        weights: a :class:`LossWeights` or the name of a published combination.
        temperature: τ of ``L_con`` (0.07).
        learn_temperature: make τ a trainable parameter (the pre-restore HarMA base); fixed at HEAD.
        margin, mv_margin, gamma: triplet margins of ``L_tri`` and ``L_MPT`` (0.2 each) and γ (2).
        mpc_scale: ``s`` of ``L_MPC``, CLIP's frozen ``exp(logit_scale)`` (≈ 100 for OpenAI weights).
        reduce_views: how ``S^mv`` combines the K heads, ``"max"`` (reference) or ``"mean"``.
        same_image_positives: fix of bug 12, see the module docstring; ``False`` reproduces the reference.

    ``forward(features)`` reads ``image``, ``text``, ``ids`` and, when present, ``perspectives``, and returns
    ``{"loss": total, "con": …, "tri": …, "mpc": …, "mpt": …}``. A term whose weight is 0 is not computed.
    Every sample always has a perspective vector (r falls back to g, see ``packing``), so the MPR runs on
    every batch; the reference instead skipped the multi-perspective terms for a batch without any
    sub-image, which also broke DDP (docs/mps-clip.md §9 item 9).
    """

    def __init__(self, weights: LossWeights | str = "head", *, temperature: float = 0.07,
                 learn_temperature: bool = False, margin: float = 0.2, mv_margin: float = 0.2,
                 gamma: float = 2.0, mpc_scale: float = 100.0, reduce_views: Reduce = "max",
                 same_image_positives: bool = True):
        super().__init__()
        self.weights = LossWeights.published(weights) if isinstance(weights, str) else weights
        if learn_temperature:
            self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        else:
            self.temperature = float(temperature)
        self.margin, self.mv_margin, self.gamma = margin, mv_margin, gamma
        self.mpc_scale = mpc_scale
        self.reduce_views = reduce_views
        self.same_image_positives = same_image_positives

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g, t, ids = features["image"], features["text"], features.get("ids")
        if self.same_image_positives and ids is None:
            raise ValueError("same_image_positives=True needs features['ids'] (the image id of each sample)")
        soft_ids = ids if self.same_image_positives else None
        mask = self.same_image_positives
        v = features.get("perspectives")
        terms: dict[str, torch.Tensor] = {}
        w = self.weights
        if w.con:
            terms["con"] = multi_positive_contrastive(g, t, ids, self.temperature)
        if w.tri:
            terms["tri"] = weighted_triplet(g @ t.t(), self.margin, self.gamma, ids, mask)
        if v is not None and (w.mpc or w.mpt):
            sim_mv = perspective_similarity(v, t, self.reduce_views)
            if w.mpc:
                terms["mpc"] = symmetric_contrastive(self.mpc_scale * sim_mv, soft_ids)
            if w.mpt:
                terms["mpt"] = weighted_triplet(sim_mv, self.mv_margin, self.gamma, ids, mask)
        terms["loss"] = sum(getattr(w, name) * value for name, value in terms.items())
        return terms

    def extra_repr(self) -> str:
        weights = ", ".join(f"{f.name}={getattr(self.weights, f.name)}" for f in fields(self.weights))
        return f"weights=({weights}), same_image_positives={self.same_image_positives}"
