"""SAM through segment-geospatial (samgeo): checkpoints, construction, and call counting.

samgeo builds SAM from ``segment_anything.sam_model_registry[model_type](checkpoint=...)``. When it gets no
existing checkpoint it downloads one, so rsitr-bench always resolves the file itself first and fails with a
message naming the file and the folder samgeo looks in. ``rsitr-tiny-sam`` is a 5 M-parameter SAM with
random weights (seed 0), registered in the same registry, for tests and CPU benchmarks: it exercises the
real pipeline and call pattern, and segments nothing meaningful.

``import samgeo`` is safe (no network, ~4 s). ``samgeo.text_sam`` (LangSAM) is not: if ``groundingdino`` is
missing it runs ``pip install`` at import time, so :func:`require_langsam` checks first and never imports it
otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from rsitr_bench.errors import CheckpointError, UserError
from rsitr_bench.harness.atomic import write_atomic

#: The official SAM 1 checkpoints samgeo knows, by model type.
SAM_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "vit_h": ("sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
    "vit_l": ("sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    "vit_b": ("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
}
TINY_SAM = "rsitr-tiny-sam"
_TINY_VERSION = 1


def samgeo_checkpoint_dir() -> Path:
    """The folder samgeo reads (and would download) checkpoints into: ``$TORCH_HOME`` or the torch hub one."""
    return Path(os.environ.get("TORCH_HOME", Path("~/.cache/torch/hub/checkpoints").expanduser()))


def resolve_sam_checkpoint(model_type: str, checkpoint: str | None, cache_dir: Path) -> Path:
    """The SAM checkpoint file to load, or a :class:`CheckpointError` that says where to put it."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"SAM checkpoint {path} does not exist. Check perspectives.sam_checkpoint, "
                                  f"or drop it to use {model_type}'s default file in "
                                  f"{samgeo_checkpoint_dir()}.")
        return path
    if model_type == TINY_SAM:
        return tiny_sam_checkpoint(cache_dir)
    if model_type not in SAM_CHECKPOINTS:
        raise UserError(f"Unknown SAM model type {model_type!r}; use one of {', '.join(SAM_CHECKPOINTS)} or "
                        f"{TINY_SAM!r} (random weights, for tests).")
    name, url = SAM_CHECKPOINTS[model_type]
    path = samgeo_checkpoint_dir() / name
    if not path.is_file():
        raise CheckpointError(
            f"The SAM checkpoint {name} ({model_type}) is not at {path}, where segment-geospatial expects it "
            f"($TORCH_HOME, default ~/.cache/torch/hub/checkpoints), and rsitr-bench never downloads during "
            f"a run. Download {url} into {path.parent}, or pass --set perspectives.sam_checkpoint=PATH.")
    return path


def _build_tiny_sam(checkpoint: str | None = None) -> torch.nn.Module:
    from segment_anything.build_sam import _build_sam

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                           encoder_global_attn_indexes=[1], checkpoint=None)
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    return model


def register_tiny_sam() -> None:
    """Make ``rsitr-tiny-sam`` a model type of segment_anything's registry (the one samgeo uses)."""
    from segment_anything import sam_model_registry

    sam_model_registry.setdefault(TINY_SAM, _build_tiny_sam)


def tiny_sam_checkpoint(cache_dir: Path) -> Path:
    """The tiny SAM's state dict, written once into the cache (samgeo insists on a checkpoint file)."""
    path = Path(cache_dir) / "models" / f"{TINY_SAM}-v{_TINY_VERSION}.pth"
    if not path.is_file():
        state = _build_tiny_sam().state_dict()
        write_atomic(path, lambda fh: torch.save(state, fh))
    return path


def require_samgeo() -> None:
    """Fail early, with the install command, when segment-geospatial is absent (without importing it)."""
    if importlib.util.find_spec("samgeo") is None:
        raise UserError("The SAM perspective generators ('samgeo', 'sam-auto') need segment-geospatial: "
                        "install it with `pip install 'rsitr-bench[sam]'`, or use 'clip-saliency' or 'grid'.")


def import_samgeo() -> Any:
    """The ``samgeo`` package, or a UserError saying how to install it (its import banner is silenced)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import samgeo
    except ImportError as exc:
        raise UserError(f"The SAM perspective generators need segment-geospatial ({exc}). Install it with "
                        f"`pip install 'rsitr-bench[sam]'`, or use the 'clip-saliency' or 'grid' generator."
                        ) from None
    return samgeo


def build_samgeo(model_type: str, checkpoint: Path, device: str, automatic: bool,
                 sam_kwargs: dict | None = None) -> Any:
    """A ``samgeo.SamGeo`` around the given SAM checkpoint (never a download)."""
    samgeo = import_samgeo()
    if model_type == TINY_SAM:
        register_tiny_sam()
    with contextlib.redirect_stdout(io.StringIO()):
        return samgeo.SamGeo(model_type=model_type, automatic=automatic, device=device,
                             checkpoint=str(checkpoint), sam_kwargs=sam_kwargs)


def require_langsam() -> None:
    """Refuse LangSAM unless ``groundingdino`` is importable: importing it otherwise runs ``pip install``."""
    if importlib.util.find_spec("groundingdino") is None:
        raise UserError("localizer 'langsam' needs the groundingdino package, which is not installed; "
                        "samgeo's LangSAM would try to pip-install it at import time, so rsitr-bench does "
                        "not import it. Use localizer 'grounding-dino' (transformers) or 'clip-saliency'.")


def count_calls(module: torch.nn.Module, counters: Counter, key: str) -> None:
    """Count every forward call of ``module`` into ``counters[key]`` (the heavy-call benchmark reads it)."""
    module.register_forward_hook(lambda *_: counters.update({key: 1}))
