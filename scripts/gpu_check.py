"""Measure the GPU fast path on one GPU in under five minutes and write the figures to one JSON file.

What it measures (docs/performance.md, "GPU check"), all with random weights (open_clip ViT-B-32,
``pretrained=None``) and synthetic tensors, so nothing is downloaded:

* MPS-CLIP training throughput through the engine (image-caption pairs per second, and the peak memory
  ``torch.cuda.max_memory_allocated``) for bf16 autocast vs float32 (TF32 matmuls, as the engine runs it on
  CUDA), with sub-images packed (the method's layout) vs padded to the batch's maximum (the reference's
  layout, implemented here only);
* evaluation throughput: images per second through the image tower, float32 (how scoring runs) and bf16;
* the streaming metric at 100,000 images x 500,000 captions x 512 on the device.

Without CUDA it stops at once, saying so. ``--dry-run`` (= ``--device cpu --tiny``) runs the whole logic on
the CPU with a tiny model and tiny sizes in a few seconds: that is what tests/test_gpu_check.py runs.

Run through ``scripts/gpu_check.sh [--output FILE]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

# rsitr_bench (and open_clip) are imported where they are used, so that a machine without CUDA hears so at
# once rather than after the package's imports.

SCHEMA = "rsitr-bench/gpu-check-v1"
TINY_MODEL = "rsitr-gpu-check-tiny"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: Sizes of the full check (one GPU) and of the tiny CPU run.
FULL = {"model": "ViT-B-32", "image": 224, "context": 77, "batch": 128, "max_subimages": 5, "steps": 6,
        "adapter": {"bottleneck": 128, "heads": 8}, "mpr_heads": 4, "eval_batch": 256, "eval_batches": 8,
        "stream": (100_000, 500_000, 512)}
TINY = {"model": TINY_MODEL, "image": 64, "context": 32, "batch": 8, "max_subimages": 3, "steps": 2,
        "adapter": {"bottleneck": 16, "heads": 2}, "mpr_heads": 2, "eval_batch": 16, "eval_batches": 2,
        "stream": (2_000, 10_000, 64)}
NO_CUDA = ("gpu_check needs a CUDA GPU, and torch {version} finds none{why}. Run it on a GPU machine, or run "
           "`scripts/gpu_check.sh --dry-run` to exercise its logic on the CPU with a tiny model.")


def _log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    """Peak allocated bytes since the last reset; None off CUDA (no allocator statistics there)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _clip(sizes: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    import open_clip

    if sizes["model"] == TINY_MODEL:
        folder = Path(tempfile.mkdtemp(prefix="rsitr-gpu-check-"))
        (folder / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(folder / f"{TINY_MODEL}.json")
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        return open_clip.create_model(sizes["model"], pretrained=None)
    finally:
        logging.disable(logging.NOTSET)


def _network(clip: torch.nn.Module, layout: str, mpr_heads: int) -> torch.nn.Module:
    """MPS-CLIP's network; ``padded``: its forward with the reference's layout instead, every image's
    sub-images padded to the batch's maximum and all slots encoded (the method itself always packs)."""
    import torch.nn.functional as F

    from rsitr_bench.methods.mps_clip.method import MpsClipNet
    from rsitr_bench.methods.mps_clip.mpr import MPR
    from rsitr_bench.methods.mps_clip.packing import encode_padded, regions_or_global

    class PaddedMpsClipNet(MpsClipNet):
        def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            g, r, has = encode_padded(self.clip.encode_image, batch["pixels"], *batch["packed"].padded())
            text = F.normalize(self.clip.encode_text(batch["tokens"]), dim=-1)
            return {"image": g, "text": text, "perspectives": self.mpr(regions_or_global(g, r, has)),
                    "ids": batch["ids"]}

    net_class = MpsClipNet if layout == "packed" else PaddedMpsClipNet
    return net_class(clip, MPR(clip.visual.output_dim, heads=mpr_heads))


def _batch(sizes: dict[str, Any], device: torch.device, seed: int = 0) -> dict[str, Any]:
    """One synthetic MPS-CLIP micro-batch: images, tokens, 0..max sub-images per image, two captions per image."""
    from rsitr_bench.methods.mps_clip.packing import PackedPerspectives

    gen = torch.Generator().manual_seed(seed)
    n, side, context = sizes["batch"], sizes["image"], sizes["context"]
    counts = torch.randint(0, sizes["max_subimages"] + 1, (n,), generator=gen)
    tokens = torch.randint(1, 49000, (n, context), generator=gen)
    tokens[:, context // 2] = 49407  # the end-of-text token, where the text tower reads its feature
    regions = [torch.randn(int(k), 3, side, side, generator=gen) for k in counts]
    return {"pixels": torch.randn(n, 3, side, side, generator=gen).to(device),
            "packed": PackedPerspectives.from_list(regions, (3, side, side)).to(device),
            "tokens": tokens.to(device), "ids": (torch.arange(n) // 2).to(device)}


def train_throughput(sizes: dict[str, Any], device: torch.device, amp: str, layout: str, work: Path
                     ) -> dict[str, Any]:
    """Pairs per second of the engine's second epoch (the first warms up: cuDNN autotuning, allocator)."""
    from rsitr_bench.api import RunContext
    from rsitr_bench.methods.mps_clip.adapter import add_g2a_adapters, mark_trainable
    from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
    from rsitr_bench.training.engine import Engine, LoaderPlan, TrainConfig

    clip = _clip(sizes)
    add_g2a_adapters(clip, "serial", **sizes["adapter"])
    net = _network(clip, layout, sizes["mpr_heads"])
    mark_trainable(net)
    batch = _batch(sizes, device)
    steps, marks = sizes["steps"], {}

    def loader(plan: LoaderPlan) -> list[dict[str, Any]]:
        if plan.epoch == 1:  # the timed epoch starts once the first one is done and checkpointed
            _sync(device)
            _reset_peak(device)
            marks["start"] = time.perf_counter()
        return [batch] * steps

    def evaluate(model: torch.nn.Module, split: str) -> dict[str, float]:
        _sync(device)
        marks["end"] = time.perf_counter()
        return {"mR": 0.0}

    config = TrainConfig(lr=1e-5, epochs=2, batch_size=sizes["batch"], warmup=0.0, amp=amp, device=str(device),
                         keep_checkpoints="none")
    ctx = RunContext(run_dir=work / f"{amp}-{layout}", cache_dir=work / "cache",
                     seed=0, device=str(device), normalization="none", log=logging.getLogger("gpu_check"),
                     progress=False)
    loss = MPSCLIPLoss("head", mpc_scale=float(clip.logit_scale.exp()))
    summary = Engine(config, ctx).fit(net, loader, loss, evaluate)
    seconds = marks["end"] - marks["start"]
    counts = batch["packed"].counts
    encoded = sizes["batch"] + (int(counts.sum()) if layout == "packed" else sizes["batch"] * int(counts.max()))
    return {"amp": amp, "layout": layout, "steps": steps,
            "batch_size": sizes["batch"], "images_encoded_per_step": encoded,
            "pairs_per_s": round(steps * sizes["batch"] / seconds, 2), "step_s": round(seconds / steps, 4),
            "peak_memory_bytes": _peak(device), "acceleration": summary.acceleration}


def eval_throughput(sizes: dict[str, Any], device: torch.device, amp: str) -> dict[str, Any]:
    """Images per second through the image tower in eval mode, float32 (as scoring runs) or bf16 autocast."""
    clip = _clip(sizes).to(device).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(sizes["eval_batch"], 3, sizes["image"], sizes["image"], generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()

    def encode() -> None:
        with torch.inference_mode(), autocast:
            clip.encode_image(images)

    encode()  # warm-up
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    for _ in range(sizes["eval_batches"]):
        encode()
    _sync(device)
    seconds = time.perf_counter() - start
    return {"amp": amp, "batch_size": sizes["eval_batch"], "batches": sizes["eval_batches"],
            "images_per_s": round(sizes["eval_batch"] * sizes["eval_batches"] / seconds, 2),
            "peak_memory_bytes": _peak(device)}


def streaming(sizes: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The streaming metric on the device, data as benchmarks/bench_metrics.py's streaming benchmark."""
    from rsitr_bench.metrics import streaming_retrieval_metrics

    n_images, n_captions, dim = sizes["stream"]
    gen = torch.Generator(device=device).manual_seed(0)

    def unit(n: int) -> torch.Tensor:
        x = torch.randn(n, dim, generator=gen, device=device)
        return x / x.norm(dim=1, keepdim=True)

    owners = np.arange(n_captions) * n_images // n_captions
    image_emb = unit(n_images)
    text_emb = image_emb[torch.from_numpy(owners).to(device)] + 2.0 * unit(n_captions)
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    result = streaming_retrieval_metrics(image_emb, text_emb, owners, device=device)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images": n_images, "captions": n_captions, "dim": dim, "seconds": round(seconds, 3),
            "peak_memory_bytes": _peak(device), "embedding_bytes": (n_images + n_captions) * dim * 4,
            "mR": result.metrics["mR"]}


def _device_record(device: torch.device) -> dict[str, Any]:
    record = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version()}
    if device.type == "cuda":
        record["name"] = torch.cuda.get_device_name(device)
        record["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return record


def run(sizes: dict[str, Any], device: torch.device, step: Callable[[str], None] = _log) -> dict[str, Any]:
    """Every measurement, in the order the JSON lists them."""
    started = time.perf_counter()
    out: dict[str, Any] = {"schema": SCHEMA, "environment": _device_record(device),
                           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.items()},
                           "training": [], "evaluation": []}
    with tempfile.TemporaryDirectory(prefix="rsitr-gpu-check-") as tmp:
        for amp in ("bf16", "off"):
            for layout in ("packed", "padded"):
                step(f"training: amp {amp}, {layout} sub-images")
                out["training"].append(train_throughput(sizes, device, amp, layout, Path(tmp)))
    for amp in ("off", "bf16"):
        step(f"evaluation: amp {amp}")
        out["evaluation"].append(eval_throughput(sizes, device, amp))
    step("streaming metric {} x {} x {}".format(*sizes["stream"]))
    out["streaming"] = streaming(sizes, device)
    out["wall_s"] = round(time.perf_counter() - started, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("gpu_check.json"), help="the JSON file to write")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (cpu only with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and tiny sizes (checks the logic)")
    parser.add_argument("--dry-run", action="store_true", help="the same as --device cpu --tiny")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = " (it is built without CUDA)" if torch.version.cuda is None else ""
        print(NO_CUDA.format(version=torch.__version__, why=why), file=sys.stderr)
        return 2
    if device.type != "cuda" and not args.tiny:
        print("gpu_check: the full check is sized for a GPU; on the CPU run it with --tiny (or --dry-run).",
              file=sys.stderr)
        return 2
    from rsitr_bench.harness.atomic import write_json_atomic

    if device.type == "cpu":  # tiny models gain nothing from more threads, and a busy machine's thrash
        torch.set_num_threads(1)
    result = run(TINY if args.tiny else FULL, device)
    result["command"] = shlex.join(["scripts/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)])
    write_json_atomic(args.output, result)
    _log(f"wrote {args.output} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
