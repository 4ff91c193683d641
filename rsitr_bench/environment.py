"""Provenance: what a result was computed with, recorded beside every run."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("rsitr-bench", "torch", "torchvision", "open_clip_torch", "transformers", "numpy", "pillow",
            "pluggy", "optuna", "safetensors", "segment-geospatial")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_sha(path: Path) -> str | None:
    """The commit of the checkout rsitr-bench runs from, when it runs from one."""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def resolve_device(requested: str) -> str:
    """``auto`` picks cuda, then mps, then cpu."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def capture_environment(device: str, plugins: list[dict[str, str]]) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "threads": torch.get_num_threads(),
        },
        "device": device,
        "git_sha": git_sha(Path(__file__).resolve().parent),
        "plugins": plugins,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["torch"]["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env
