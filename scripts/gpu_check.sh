#!/usr/bin/env bash
# Measure the GPU fast path on one GPU in under five minutes; writes one JSON file (default gpu_check.json).
#   scripts/gpu_check.sh [--output FILE]                # on a CUDA machine
#   scripts/gpu_check.sh --dry-run --output /tmp/x.json # the same logic on the CPU, tiny model, seconds
# What it measures and how to read it: docs/performance.md, "GPU check". PYTHON overrides the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # random weights only: nothing is downloaded
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/scripts/gpu_check.py" "$@"
