"""Provenance: what a result was computed with, recorded beside every run."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from rsitr_bench.errors import UserError

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


def available_devices() -> list[str]:
    """The ``--device`` values this machine can run on, besides ``auto``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _why_missing(requested: str) -> str:
    import torch

    if requested.startswith("cuda"):
        if torch.version.cuda is None:
            return f" (this torch {torch.__version__} is built without CUDA)"
        if torch.cuda.is_available():
            return f" (torch sees {torch.cuda.device_count()} CUDA device(s))"
        return " (torch finds no CUDA GPU)"
    if requested.startswith("mps"):
        return " (Apple's MPS backend is not available)"
    return " (not a device name)"


def resolve_device(requested: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; any other name must be a device this machine has.

    Under ``torchrun`` (``LOCAL_RANK`` set) ``auto`` is this process's own GPU, ``cuda:LOCAL_RANK``, so ranks
    never share one. The runner checks the device before it creates a run, so a typo (``gpu``) or a missing
    GPU is one paragraph saying what to pass, not a torch traceback halfway through a run then left ``failed``.
    """
    devices = available_devices()
    if requested == "auto":
        if "cuda" in devices:
            local = os.environ.get("LOCAL_RANK")
            return "cuda" if local is None else f"cuda:{int(local)}"
        return "mps" if "mps" in devices else "cpu"
    if requested not in devices:
        best = devices[1] if len(devices) > 1 else "cpu"
        raise UserError(f"Device {requested!r} is not available here{_why_missing(requested)}. Devices on this "
                        f"machine: auto, {', '.join(devices)}. Pass --device {best} (or --device auto, which "
                        f"picks the best of them).")
    return requested


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (modulo 2**32, its range) and torch on every device: the one seeding of a run."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
