"""open_clip backbones, built from a name plus weights, loaded strictly and safely.

Weights come from one of three places:

* ``checkpoint``: a local file (``.safetensors``, or a ``.pt``/``.pth``/``.bin`` state dict);
* ``pretrained``: an open_clip tag (``ViT-B-32`` / ``openai``) resolved *from the local caches only*;
* neither: random initialisation from ``init_seed`` (tiny configs for CPU tests).

Every load is strict (a missing or unexpected key is an error listing the keys, unlike the reference
MPS-CLIP code that silently left adapters at their initialisation) and safe (safetensors, or
``torch.load(weights_only=True)``: no pickled code runs). A run never downloads: when weights are absent the
error says which file to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from rsitr_bench.errors import CheckpointError, UserError

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered_configs = False

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: The pretrained tag of rsitr-bench's own embedded weights, trained by scripts/train_embedded_backbone.py.
EMBEDDED_TAG = "synthetic-rs"
EMBEDDED_WEIGHTS = Path(__file__).parent / "weights"


def register_model_configs() -> None:
    """Register rsitr-bench's own open_clip configs (e.g. ``rsitr-tiny``) once per process."""
    global _registered_configs
    if not _registered_configs:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered_configs = True


@dataclass
class Backbone:
    """A built CLIP model with its preprocessing and tokenizer.

    Attributes:
        identity: a string that changes whenever the weights or architecture change; feature caches key on it.
    """

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    identity: str
    image_size: int


@dataclass
class BackboneOptions:
    """The backbone fields every CLIP-based method declares.

    Attributes:
        model: an open_clip model name (``ViT-B-32``, ``RN50``, ...) or rsitr-bench's ``rsitr-tiny``.
        pretrained: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``), found in local caches;
            ``synthetic-rs`` is rsitr-bench's embedded ``rsitr-tiny`` weights (see
            scripts/train_embedded_backbone.py). None means random initialisation from ``init_seed``.
        checkpoint: a local weights file; takes precedence over ``pretrained``.
        init_seed: seed of the random initialisation when neither weights source is given.
    """

    model: str = "rsitr-tiny"
    pretrained: str | None = EMBEDDED_TAG
    checkpoint: str | None = None
    init_seed: int = 0

    def build_backbone(self, device: str = "cpu") -> Backbone:
        return build_backbone(self.model, self.pretrained, self.checkpoint, self.init_seed, device)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_backbone(model_name: str, pretrained: str | None = None, checkpoint: str | os.PathLike | None = None,
                   init_seed: int = 0, device: str = "cpu") -> Backbone:
    """Create an open_clip model and load its weights (see the module docstring for the sources)."""
    register_model_configs()
    if model_name not in open_clip.list_models() and not model_name.startswith("hf-hub:"):
        raise UserError(f"Unknown open_clip model {model_name!r}. Use one of open_clip.list_models() "
                        f"(e.g. ViT-B-32, RN50) or rsitr-bench's own 'rsitr-tiny'.")
    quick_gelu = False
    weights: Path | None = None
    if checkpoint is not None:
        weights = Path(checkpoint).expanduser()
        if not weights.is_file():
            raise CheckpointError(f"Checkpoint file {weights} does not exist. Check the path given as "
                                  f"method.checkpoint, or drop it to use the model's pretrained tag.")
    elif pretrained:
        weights, quick_gelu = resolve_pretrained(model_name, pretrained)

    torch.manual_seed(init_seed)
    with _quiet_random_init_warning():
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")
    if weights is not None:
        load_state_dict_strict(model, read_state_dict(weights), source=str(weights))
        identity = f"{model_name}|quick_gelu={quick_gelu}|sha256={file_sha256(weights)}"
    else:
        identity = f"{model_name}|random-init|seed={init_seed}"
    model.eval().to(device)
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    return Backbone(model, preprocess, tokenizer, identity, size[0] if isinstance(size, tuple) else int(size))


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns "initialized randomly" whenever it loads no weights itself; ours come just after."""

    def keep(record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def resolve_pretrained(model_name: str, tag: str) -> tuple[Path, bool]:
    """Find the weights of an open_clip pretrained tag in the local caches, without any network access."""
    embedded = EMBEDDED_WEIGHTS / f"{model_name}-{tag}.safetensors"
    if embedded.is_file():
        return embedded, False
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(f"open_clip has no pretrained tag {tag!r} for {model_name}. Known tags: "
                        f"{', '.join(tags) or '(none)'}; or pass a local file as method.checkpoint.")
    quick_gelu = bool(cfg.get("quick_gelu", False))
    hub = cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        from huggingface_hub import try_to_load_from_cache

        for name in ([filename] if filename else list(HF_WEIGHT_FILES)):
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str):
                return Path(found), quick_gelu
        hint = (f"download https://huggingface.co/{repo_id}/resolve/main/{filename or HF_WEIGHT_FILES[0]} "
                f"(or run `huggingface-cli download {repo_id} {filename or HF_WEIGHT_FILES[0]}` on a machine "
                f"with network access and copy the Hugging Face cache)")
    else:
        url = cfg.get("url", "")
        local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if local.is_file():
            return local, quick_gelu
        hint = f"download {url} into {local.parent}"
    raise CheckpointError(
        f"The weights of {model_name} / {tag} are not on this machine, and rsitr-bench never downloads during "
        f"a run. To use them, {hint}; or save them anywhere and pass --set method.checkpoint=PATH.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict without executing pickled code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path} safely: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
            f"rsitr-bench reads .safetensors files or plain tensor state dicts only (no pickled code); "
            f"convert the file with safetensors.torch.save_file on a trusted machine.") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Checkpoint {path} does not hold a state dict of tensors.")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                           show: int = 8) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is an error listing them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                more = f" (+{len(keys) - show} more)" if len(keys) > show else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:show])}{more}")
        raise CheckpointError(
            f"Checkpoint {source} does not match the model: " + "; ".join(parts) + ". It was probably saved "
            "for another architecture or variant; pick the matching method.model / variant options.")
    model.load_state_dict(state, strict=True)
