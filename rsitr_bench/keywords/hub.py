"""Local-only resolution of Hugging Face models (keyword LLMs, GroundingDINO detectors).

A run never downloads. A model is either a local directory (``save_pretrained`` output) or a hub id already
in the Hugging Face cache; anything else is an error that names the folder that was searched and how to
fill it.
"""

from __future__ import annotations

from pathlib import Path

from rsitr_bench.errors import CheckpointError
from rsitr_bench.keywords.cache import digest, weights_digest

_VERSIONED = (".safetensors", ".bin", ".json", ".model", ".txt")


def hub_folder(model_id: str) -> Path:
    """Where the Hugging Face cache keeps ``model_id``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}"


def resolve_local_model(model: str, cache_dir: Path, what: str, option: str,
                        alternative: str) -> tuple[Path, str]:
    """The local directory of ``model`` and a version string for cache keys.

    Arguments:
        what: the model's role for the error message (e.g. "keyword LLM").
        option: the option that points at a local directory (e.g. "keywords.model").
        alternative: what the user can do instead, for the error message.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"The {what} directory {path} has no config.json: it is not a saved "
                                  f"transformers model. Save one with model.save_pretrained(DIR) (and its "
                                  f"tokenizer or processor) and pass --set {option}=DIR.")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _VERSIONED)
        return path, digest([(p.name, weights_digest(p, cache_dir)) for p in files])
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(model, local_files_only=True))
    except Exception:
        raise CheckpointError(
            f"The {what} {model!r} is not on this machine (looked in {hub_folder(model)}), and rsitr-bench "
            f"never downloads during a run. Fetch it where there is network access (`huggingface-cli "
            f"download {model}`) and copy that folder into the Hugging Face cache, or save the model to a "
            f"directory and pass --set {option}=DIR; {alternative}.") from None
    return local, f"{model}@{local.name}"


def is_available(model: str) -> bool:
    """Whether :func:`resolve_local_model` would find ``model`` (without hashing anything)."""
    if Path(model).expanduser().is_dir():
        return (Path(model).expanduser() / "config.json").is_file()
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model, local_files_only=True)
    except Exception:
        return False
    return True
