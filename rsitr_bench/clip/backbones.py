"""open_clip backbones, built from a name plus weights, loaded strictly and safely.

Weights come from one of four places (all fetched through :mod:`rsitr_bench.harness.hub`, which records where they came
from and their sha256, and downloads only when they are not on this machine and the network is allowed):

* ``checkpoint``: a local file, a hub file (``hf://OWNER/REPO/FILE[@REV]``) or a URL; ``.safetensors``, or a
  ``.pt``/``.pth``/``.bin`` state dict;
* ``model="hf-hub:OWNER/REPO[@REV]"``: an open_clip hub repo; its ``open_clip_config.json`` defines the
  architecture and its weights file is loaded (``pretrained`` is ignored);
* ``pretrained``: an open_clip pretrained tag (``ViT-B-32`` / ``openai``), fetched from its ``hf_hub`` repo or
  its ``url``; ``synthetic-rs`` is embedded in the package and never needs the network;
* none of them: random initialisation from ``init_seed`` (tiny configs for CPU tests).

Every load is strict (a missing or unexpected key is an error listing the keys, unlike the reference
MPS-CLIP code that silently left adapters at their initialisation) and safe (safetensors, or
``torch.load(weights_only=True)``: no pickled code runs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from rsitr_bench.checkpoints import get_entry, is_catalog_name, resolve_backbone, resolve_checkpoint
from rsitr_bench.errors import CheckpointError, UserError
from rsitr_bench.harness.hub import FetchedFile, RemoteFileMissing, fetch, fetch_hf_file, offline, parse_weight_source

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
        weights_source: where the loaded weights came from (``hf://OWNER/REPO/FILE@COMMIT``, a URL or an
            absolute path), for run provenance; None for a random initialisation.
        weights_sha256: sha256 of the loaded weights file; None for a random initialisation.
    """

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    identity: str
    image_size: int
    weights_source: str | None = None
    weights_sha256: str | None = None


@dataclass
class BackboneOptions:
    """The backbone fields every CLIP-based method declares.

    Attributes:
        model: an open_clip model name (``ViT-B-32``, ``RN50``, ...), rsitr-bench's ``rsitr-tiny``, or an open_clip
            hub repo ``hf-hub:OWNER/REPO[@REV]`` (config and weights from the repo; ``pretrained`` is ignored).
        pretrained: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``), fetched into the Hugging Face
            cache unless already there; ``synthetic-rs`` is rsitr-bench's embedded ``rsitr-tiny`` weights (see
            scripts/train_embedded_backbone.py). None means random initialisation from ``init_seed``.
        checkpoint: a weights file: a local path, ``hf://OWNER/REPO/FILE[@REV]`` or a URL; takes precedence over
            ``pretrained``.
        init_seed: seed of the random initialisation when neither weights source is given.
    """

    model: str = "rsitr-tiny"
    pretrained: str | None = EMBEDDED_TAG
    checkpoint: str | None = None
    init_seed: int = 0

    def build_backbone(self, device: str = "cpu") -> Backbone:
        return build_backbone(self.model, self.pretrained, self.checkpoint, self.init_seed, device)


def build_backbone(model_name: str, pretrained: str | None = None, checkpoint: str | os.PathLike | None = None,
                   init_seed: int = 0, device: str = "cpu") -> Backbone:
    """Create an open_clip model and load its weights (see the module docstring for the sources)."""
    register_model_configs()
    hub_repo = parse_weight_source(model_name) if model_name.startswith("hf-hub:") else None
    if hub_repo is None and model_name not in open_clip.list_models():
        raise UserError(f"Unknown open_clip model {model_name!r}. Use one of open_clip.list_models() "
                        f"(e.g. ViT-B-32, RN50), rsitr-bench's own 'rsitr-tiny', or an open_clip hub repo "
                        f"hf-hub:OWNER/REPO.")
    quick_gelu = False
    weights: FetchedFile | None = None
    create_name = model_name
    if hub_repo is not None:
        assert hub_repo.repo_id is not None
        config = fetch_hf_file(hub_repo.repo_id, "open_clip_config.json", revision=hub_repo.revision,
                               what=f"the open_clip config of {model_name}")
        create_name = f"local-dir:{config.path.parent}"  # the snapshot folder: open_clip reads the config there
    if checkpoint is not None and is_catalog_name(str(checkpoint)):
        weights, quick_gelu = resolve_backbone(str(checkpoint), model_name)
    elif checkpoint is not None:
        weights = resolve_weights_file(str(checkpoint))
    elif hub_repo is not None:
        assert hub_repo.repo_id is not None
        weights = _fetch_first(hub_repo.repo_id, HF_WEIGHT_FILES, hub_repo.revision, f"the weights of {model_name}")
    elif pretrained and is_catalog_name(pretrained):
        weights, quick_gelu = resolve_backbone(pretrained, model_name)
    elif pretrained:
        weights, quick_gelu = resolve_pretrained(model_name, pretrained)

    torch.manual_seed(init_seed)
    with quiet_random_init_warning():
        model, _, preprocess = open_clip.create_model_and_transforms(
            create_name, pretrained=None, load_weights=False, force_quick_gelu=quick_gelu, device="cpu")
    if weights is not None:
        load_state_dict_strict(model, read_state_dict(weights.path), source=weights.source)
        identity = f"{model_name}|quick_gelu={quick_gelu}|sha256={weights.sha256}"
    else:
        identity = f"{model_name}|random-init|seed={init_seed}"
    model.eval().to(device)
    tokenizer = open_clip.get_tokenizer(create_name)
    size = model.visual.image_size
    return Backbone(model, preprocess, tokenizer, identity, size[0] if isinstance(size, tuple) else int(size),
                    weights_source=weights.source if weights else None,
                    weights_sha256=weights.sha256 if weights else None)


def weights_provenance(backbone: Backbone | None) -> dict[str, Any]:
    """What a result records about the weights that produced it (see :class:`rsitr_bench.api.ReportsWeights`)."""
    if backbone is None:
        return {}
    return {"identity": backbone.identity, "source": backbone.weights_source, "sha256": backbone.weights_sha256}


def resolve_weights_file(spec: str) -> FetchedFile:
    """The weights file ``spec`` names (a catalog name, local path, ``hf://`` file or URL), fetched if needed and
    hashed; a catalog entry's expected sha256 is checked."""
    if is_catalog_name(spec):
        return resolve_checkpoint(get_entry(spec))
    return fetch(spec, what=f"the checkpoint {spec} (method.checkpoint)")


@contextmanager
def quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns "initialized randomly" whenever it loads no weights itself; ours come just after."""

    def keep(record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def resolve_pretrained(model_name: str, tag: str) -> tuple[FetchedFile, bool]:
    """The weights of an open_clip pretrained tag (embedded, cached, or downloaded) and its quick_gelu flag."""
    embedded = EMBEDDED_WEIGHTS / f"{model_name}-{tag}.safetensors"
    if embedded.is_file():
        return fetch(str(embedded), what=f"the embedded {model_name} / {tag} weights"), False
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(f"open_clip has no pretrained tag {tag!r} for {model_name}. Known tags: "
                        f"{', '.join(tags) or '(none)'}; or pass a weights file as method.checkpoint.")
    quick_gelu = bool(cfg.get("quick_gelu", False))
    label = f"the {model_name} / {tag} weights"
    if hub := cfg.get("hf_hub", ""):
        repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
        return _fetch_first(repo_id, (filename,) if filename else HF_WEIGHT_FILES, None, label), quick_gelu
    if url := cfg.get("url", ""):
        return fetch(url, what=label), quick_gelu
    raise UserError(f"open_clip names no download for {model_name} / {tag}; pass a weights file as "
                    f"method.checkpoint.")


def _fetch_first(repo_id: str, names: tuple[str, ...], revision: str | None, label: str) -> FetchedFile:
    """The first of ``names`` the repo has (open_clip repos hold safetensors, a .bin, or both).

    Offline, a miss on every name reports the first (preferred) one, which is the file to download.
    """
    first: CheckpointError | None = None
    for name in names:
        try:
            return fetch_hf_file(repo_id, name, revision=revision, what=label)
        except CheckpointError as exc:
            if not (isinstance(exc, RemoteFileMissing) or offline()):
                raise
            first = first or exc
    assert first is not None
    raise first


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
