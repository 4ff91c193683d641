"""scripts/gpu_check.sh: without CUDA it stops at once with a message; ``--dry-run`` runs all of its logic on
the CPU with a tiny model and writes the JSON a GPU run would write."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the check")
def test_without_cuda_it_stops_at_once_saying_why(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _run("--output", str(out))
    assert done.returncode != 0
    assert "gpu_check needs a CUDA GPU" in done.stderr and "--dry-run" in done.stderr
    assert not out.exists()
    refused = _run("--device", "cpu", "--output", str(out))
    assert refused.returncode != 0 and "--tiny" in refused.stderr and not out.exists()


@pytest.mark.slow
def test_dry_run_exercises_every_measurement_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _run("--dry-run", "--output", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["schema"] == "rsitr-bench/gpu-check-v1" and result["environment"]["device"] == "cpu"
    assert result["command"] == f"scripts/gpu_check.sh --dry-run --output {out}"
    runs = {(r["amp"], r["layout"]): r for r in result["training"]}
    assert set(runs) == {("bf16", "packed"), ("bf16", "padded"), ("off", "packed"), ("off", "padded")}
    for (amp, _), r in runs.items():
        assert r["pairs_per_s"] > 0 and r["peak_memory_bytes"] is None  # no allocator statistics on the CPU
        assert r["acceleration"] == {"amp": "bfloat16" if amp == "bf16" else "off", "tf32": False,
                                     "channels_last": False, "optimizer": "default", "compile": "off"}
    # the padded layout encodes a slot per image up to the batch's maximum; packing only the real sub-images
    assert runs["off", "padded"]["images_encoded_per_step"] > runs["off", "packed"]["images_encoded_per_step"]
    assert [e["amp"] for e in result["evaluation"]] == ["off", "bf16"]
    assert all(e["images_per_s"] > 0 for e in result["evaluation"])
    stream = result["streaming"]
    assert (stream["images"], stream["captions"], stream["dim"]) == tuple(result["settings"]["stream"])
    assert 0 < stream["mR"] <= 100 and stream["seconds"] > 0
