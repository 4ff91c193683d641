"""Patch-level keyword similarity for an open_clip backbone: where in the image a text is.

The similarity map works with any open_clip ``VisionTransformer`` (the patch tokens are projected into
the joint space and compared with the keyword's text embedding). Two token sources are offered:

``value`` (default)
    The last block's attention *value* path applied to its input tokens, without the query-key mixing,
    then the final norm and projection (the MaskCLIP observation: in trained CLIPs the final-layer
    tokens are dominated by global context, while the value path keeps each patch's own content).
``final``
    The transformer's final patch tokens, normed and projected as the class token is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.clip.encode import model_device
from rsitr_bench.errors import UserError

TokenSource = Literal["value", "final"]
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalization(backbone: Backbone) -> tuple[Sequence[float], Sequence[float]]:
    for t in getattr(backbone.preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            return t.mean, t.std
    return _OPENAI_MEAN, _OPENAI_STD


def full_view_pixels(backbone: Backbone, image: Image.Image) -> torch.Tensor:
    """``[1, 3, S, S]``: the whole image resized (not centre-cropped), so every patch maps back to pixels."""
    return window_pixels(backbone, image, [(0, 0, *image.size)])


def window_pixels(backbone: Backbone, image: Image.Image, boxes: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
    """``[len(boxes), 3, S, S]``: each ``(x0, y0, x1, y1)`` window of ``image`` resized to the backbone's input."""
    size = backbone.image_size
    rgb = image.convert("RGB")
    arr = np.stack([np.asarray(rgb.resize((size, size), Image.BICUBIC, box=box), dtype=np.float32) / 255.0
                    for box in boxes])
    mean, std = _normalization(backbone)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).to(model_device(backbone))


def patch_embeddings(backbone: Backbone, pixels: torch.Tensor, source: TokenSource = "value") -> torch.Tensor:
    """Projected, L2-normalised patch embeddings ``[n, gh, gw, dim]`` of a batch of ``n`` views."""
    visual = backbone.model.visual
    parts = ("conv1", "transformer", "ln_post", "output_tokens")
    if getattr(visual, "attn_pool", None) is not None or not all(hasattr(visual, a) for a in parts):
        raise UserError(f"Patch-level localisation (clip-saliency, dense-clip) needs an open_clip VisionTransformer "
                        f"with patch tokens; {type(visual).__name__} of backbone {backbone.identity} has none. Use "
                        f"the 'grid' generator, or 'samgeo' with a GroundingDINO localizer.")
    captured: list[torch.Tensor] = []
    last = visual.transformer.resblocks[-1]
    hook = None
    if source == "value":
        hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        with torch.inference_mode():
            _, tokens = visual(pixels)
            if source == "value":
                tokens = _value_tokens(visual, last, captured[0])
            elif getattr(visual, "final_ln_after_pool", False):
                tokens = visual.ln_post(tokens)
            if visual.proj is not None:
                tokens = tokens @ visual.proj
    finally:
        visual.output_tokens = previous
        if hook is not None:
            hook.remove()
    grid = visual.grid_size
    return F.normalize(tokens.float(), dim=-1).reshape(tokens.shape[0], grid[0], grid[1], -1)


def _value_tokens(visual: torch.nn.Module, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's value path on its input patch tokens, then the final norm."""
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise UserError("tokens='value' needs a standard open_clip attention block; "
                        "use tokens='final' for this backbone.")
    if not getattr(visual.transformer, "batch_first", True):
        x = x.transpose(0, 1)
    width = x.shape[-1]
    y = block.ln_1(x)
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    v = attn.out_proj(F.linear(y, attn.in_proj_weight[2 * width:], bias))
    v = block.ls_1(v) if hasattr(block, "ls_1") else v
    return visual.ln_post(v[:, 1:])


def patch_text_similarity(backbone: Backbone, image: Image.Image, text_embeddings: torch.Tensor,
                          source: TokenSource = "value") -> np.ndarray:
    """Cosine similarity ``[n_texts, gh, gw]`` between every patch of ``image`` and every text embedding."""
    patches = patch_embeddings(backbone, full_view_pixels(backbone, image), source)[0]
    return torch.einsum("hwd,kd->khw", patches, text_embeddings.to(patches.device)).cpu().numpy()


def window_boxes(width: int, height: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Square ``window``-pixel windows every ``stride`` pixels, the last flush with the far edge, row by row;
    together they cover every pixel. A side shorter than ``window`` gets one window clipped to it."""
    def starts(length: int) -> list[int]:
        last = max(0, length - window)
        return sorted({*range(0, last, stride), last})

    return [(x, y, min(x + window, width), min(y + window, height))
            for y in starts(height) for x in starts(width)]


def sliding_window_similarity(backbone: Backbone, image: Image.Image, text_embeddings: torch.Tensor,
                              source: TokenSource = "value", window: int | None = None,
                              stride: int | None = None) -> np.ndarray:
    """Similarity ``[n_texts, H, W]`` of every pixel with every text embedding, from overlapping windows.

    Each window is resized to the backbone's input, its patch map is upsampled bilinearly back to the window's
    pixels, and overlapping windows are averaged. A window smaller than the image gives the map a finer grid
    than the backbone's patch grid over the whole image. All windows go through the backbone as one batch.
    The values are dot products with unit patch embeddings: cosine similarities for unit text embeddings.
    """
    width, height = image.size
    window = window or min(width, height)
    boxes = window_boxes(width, height, window, stride or max(1, window // 2))
    patches = patch_embeddings(backbone, window_pixels(backbone, image, boxes), source)
    maps = torch.einsum("nhwd,kd->nkhw", patches, text_embeddings.to(patches.device).float())
    x0, y0, x1, y1 = boxes[0]  # every window has the same size
    maps = F.interpolate(maps, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    total = torch.zeros(len(text_embeddings), height, width, device=maps.device)
    count = torch.zeros(height, width, device=maps.device)
    for (x0, y0, x1, y1), sim in zip(boxes, maps):
        total[:, y0:y1, x0:x1] += sim
        count[y0:y1, x0:x1] += 1
    return (total / count).cpu().numpy()
