"""Packed perspectives: encode only the sub-images that exist (docs/mps-clip.md §1.3, §9 item 11).

Images own a variable number of perspective sub-images (0 to ~20). The reference pads them to
``[B, max_n, 3, H, W]`` and runs the ViT on every padded slot. Here a batch stores its sub-images
concatenated (:class:`PackedPerspectives`) with the index of the owning image, the global images and all
real sub-images go through the encoder in *one* call, and the per-image mean is a segment sum
(``index_add_``) divided by the counts. No padded slot is ever encoded.

Per image (docs/mps-clip.md §1.3, §6.2): sub-image embeddings are L2-normalised, averaged, and normalised again to give
``r``. In training an image without sub-images uses ``r := g`` (:func:`regions_or_global`); when scoring
the gallery embedding is ``normalize(0.5·(g + r))``, or ``g`` without sub-images (:func:`fuse_for_scoring`).

:func:`encode_padded` is the reference layout, kept only so tests can prove equivalence and benchmarks can
measure the saving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Encoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PackedPerspectives:
    """The sub-images of a batch of ``n_images`` images, concatenated.

    Attributes:
        pixels: ``[S, 3, H, W]``, the sub-images of image 0, then image 1, … (S may be 0).
        owner: ``[S]`` int64, the batch index of the image each sub-image belongs to.
        counts: ``[n_images]`` int64, sub-images per image.
    """

    pixels: torch.Tensor
    owner: torch.Tensor
    counts: torch.Tensor

    @property
    def n_images(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_list(cls, per_image: Sequence[torch.Tensor], image_shape: Sequence[int] | None = None
                  ) -> PackedPerspectives:
        """Collate ``per_image[i]`` (``[n_i, 3, H, W]``, n_i ≥ 0) into one packed batch.

        ``image_shape`` ``(3, H, W)`` is needed only when every image has zero sub-images.
        """
        counts = torch.tensor([int(p.shape[0]) for p in per_image], dtype=torch.int64)
        owner = torch.repeat_interleave(torch.arange(len(per_image)), counts)
        nonempty = [p for p in per_image if p.shape[0]]
        if nonempty:
            pixels = torch.cat(nonempty)
        elif image_shape is not None:
            pixels = torch.empty(0, *image_shape)
        else:
            raise ValueError("no image has a sub-image: pass image_shape so the empty batch has a shape")
        return cls(pixels=pixels, owner=owner, counts=counts)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedPerspectives:
        return PackedPerspectives(self.pixels.to(device, non_blocking=non_blocking),
                                  self.owner.to(device, non_blocking=non_blocking),
                                  self.counts.to(device, non_blocking=non_blocking))

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference layout: ``pixels [B, max_n, 3, H, W]`` (zero-filled) and ``mask [B, max_n]``."""
        max_n = int(self.counts.max()) if self.n_images else 0
        slot = torch.arange(self.pixels.shape[0], device=self.owner.device) - \
            (torch.cumsum(self.counts, 0) - self.counts)[self.owner]
        out = self.pixels.new_zeros(self.n_images, max_n, *self.pixels.shape[1:])
        out[self.owner, slot] = self.pixels
        mask = torch.arange(max_n, device=self.counts.device)[None, :] < self.counts[:, None]
        return out, mask


def segment_mean_normalized(embeddings: torch.Tensor, owner: torch.Tensor,
                            counts: torch.Tensor) -> torch.Tensor:
    """``r_i = normalize(mean_{s: owner[s] = i} normalize(e_s))``; zero rows for images without sub-images."""
    e = F.normalize(embeddings, dim=-1)
    sums = e.new_zeros(counts.shape[0], e.shape[1]).index_add_(0, owner, e)
    mean = sums / counts.clamp(min=1).to(e.dtype)[:, None]
    return F.normalize(mean, dim=-1)


def encode_packed(encode_image: Encoder, images: torch.Tensor, packed: PackedPerspectives
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode the global images and every real sub-image in one encoder call.

    Returns ``g`` (``[B, D]``, normalised), ``r`` (``[B, D]``, normalised; zero where an image has no
    sub-image) and ``has`` (``[B]`` bool).
    """
    n = images.shape[0]
    if packed.n_images != n:
        raise ValueError(f"{n} images but perspectives for {packed.n_images}")
    feats = encode_image(torch.cat([images, packed.pixels.to(images.dtype)]))
    g = F.normalize(feats[:n], dim=-1)
    r = segment_mean_normalized(feats[n:], packed.owner, packed.counts)
    return g, r, packed.counts > 0


def encode_padded(encode_image: Encoder, images: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference computation (docs/mps-clip.md §1.3): encode all ``B·max_n`` slots, padded ones included,
    then a masked mean with the denominator clamped to ≥ 1. For tests and benchmarks only; same outputs as
    :func:`encode_packed`."""
    n, max_n = mask.shape
    feats = encode_image(torch.cat([images, pixels.reshape(n * max_n, *pixels.shape[2:]).to(images.dtype)]))
    g = F.normalize(feats[:n], dim=-1)
    e = F.normalize(feats[n:], dim=-1).reshape(n, max_n, -1) * mask[..., None].to(feats.dtype)
    r = F.normalize(e.sum(dim=1) / mask.sum(dim=1).clamp(min=1)[:, None].to(feats.dtype), dim=-1)
    return g, r, mask.any(dim=1)


def regions_or_global(g: torch.Tensor, r: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Training input of the MPR: ``r`` where the image has sub-images, else ``g`` (docs/mps-clip.md §1.3)."""
    return torch.where(has[:, None], r, g)


def fuse_for_scoring(g: torch.Tensor, r: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Gallery embedding at test time (docs/mps-clip.md §6.2): ``normalize(0.5·(g + r))``, or ``g`` without
    sub-images."""
    return torch.where(has[:, None], F.normalize(0.5 * (g + r), dim=-1), g)
