"""The training input pipeline: decoding vs the decoded-image cache, epochs through the DataLoader with 0, 1
and 2 workers, and the data-wait share of a ``full-ft`` epoch on the embedded default.

Run::

    HF_HUB_OFFLINE=1 nice .venv/bin/python -m pytest benchmarks/bench_input_pipeline.py --benchmark-only

Images: 300 synthetic RSITMD-like 256-px TIFFs and 300 RSICD-like 224-px JPEGs (quality 90), smooth noise so
JPEG sizes are realistic, generated into a temporary directory. Five measurements:

* ``test_image_fetch``: one image to a uint8 array, per image: ``decode`` (``load_rgb``, what every epoch paid
  without the cache), ``cached`` (the full-resolution entry through
  :class:`~rsitr_bench.training.image_cache.ImageBank`, warm), ``np_load_mmap`` (``np.load(mmap_mode="r")`` of
  the same entries, the reader the cache does not use) and ``view`` (the 224-px encoder input from the view
  cache, warm: :meth:`~rsitr_bench.training.clip_training.ImageViews.image`).
* ``test_epoch``: one epoch of ``full-ft`` samples (image → 224-px uint8 view, caption tokens) in
  micro-batches of 32 through one :class:`~rsitr_bench.training.loader.TrainLoader` with 0, 1 and 2 workers,
  its workers started in a warm-up epoch (persistent, as in a ``fit``): ``cold`` (the cache emptied before each
  round: decode, resize and write every entry) or ``cached`` (the view cache warm).
* ``test_worker_transport``: the cached TIFF epoch of ``test_epoch`` with 1 and 2 workers, its micro-batches
  sent through each worker's reused shared-memory slots (``slots``, what the loader does:
  :mod:`~rsitr_bench.training.shared_batches`) or the DataLoader's default way (``segments``: torch's
  ``default_collate``, a new shared-memory segment per tensor and batch, what the loader did before).
* ``test_worker_start``: a new loader's first micro-batch (cached), with 1 and 2 workers: what starting the
  workers costs, once per ``fit``.
* ``test_full_ft_data_wait``: ``rsitr_bench.run`` of ``full-ft`` on synthetic-rs with rsitr-tiny, two epochs,
  with 0 and 2 workers; the closing summary prints each epoch's data-wait share from the run's profile.

The closing summary prints images per second (images / median round) and the cached-vs-decode ratios.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision import transforms as T

import rsitr_bench
import rsitr_bench.training.loader as loader_module
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.training.clip_training import CaptionSamples, ImageViews
from rsitr_bench.training.engine import LoaderPlan
from rsitr_bench.training.image_cache import ImageBank, ImageCache
from rsitr_bench.training.loader import TrainLoader
from rsitr_bench.training.shared_batches import SharedBatches

N = 300
KINDS = {"rsitmd-256px-tif": ("tif", 256), "rsicd-224px-jpg": ("jpg", 224)}
PREPROCESS = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))])
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Split]:
    rng = np.random.default_rng(0)
    out = {}
    for kind, (ext, size) in KINDS.items():
        folder = tmp_path_factory.mktemp(kind)
        paths = []
        for i in range(N):
            coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
            noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3)), 0, 255)
            paths.append(folder / f"{i:04d}.{ext}")
            Image.fromarray(noisy.astype(np.uint8)).save(paths[-1], **({"quality": 90} if ext == "jpg" else {}))
        out[kind] = Split(kind, "train", [p.name for p in paths], paths, [f"caption {i}" for i in range(N)],
                          np.arange(N))
    return out


def _warm_bank(split: Split, cache_dir: Path) -> ImageBank:
    bank = ImageBank(split, ImageCache(cache_dir))
    for i in range(len(bank)):
        bank.array(i)
    return bank


def _rate(label: str, rate: float, note) -> None:
    """Record a rate, print it in the closing summary, and each cached-vs-decode ratio once both sides are in."""
    RATES[label] = rate
    note(f"{label}: {rate:.0f} images/s")
    for kind in KINDS:
        pairs = [(f"fetch {kind} cached", f"fetch {kind} decode", f"{kind}: cached fetch"),
                 (f"fetch {kind} view", f"fetch {kind} decode", f"{kind}: cached view")]
        pairs += [(f"epoch {kind} cached workers={w}", f"epoch {kind} cold workers={w}",
                   f"{kind}, {w} workers: cached epoch") for w in (0, 1, 2)]
        pairs += [(f"epoch {kind} cached workers={w}", f"epoch {kind} cold workers=0",
                   f"{kind}: cached epoch with {w} workers vs a cold one without") for w in (1, 2)]
        for fast, slow, text in pairs:
            if label in (fast, slow) and fast in RATES and slow in RATES:
                note(f"{text} {RATES[fast] / RATES[slow]:.1f}x")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("reader", ["decode", "cached", "np_load_mmap", "view"])
def test_image_fetch(benchmark, splits, kind, reader, tmp_path, note):
    split = splits[kind]
    bank = _warm_bank(split, tmp_path / "cache")
    if reader == "decode":
        def run():
            return [np.asarray(load_rgb(p)) for p in split.image_paths]
    elif reader == "cached":
        def run():
            return [bank.array(i) for i in range(N)]
    elif reader == "view":
        views = ImageViews(PREPROCESS)

        def run():
            return [views.image(bank, i).numpy() for i in range(N)]  # the warm-up round fills the view cache
    else:
        entries = [bank.cache.files.path(bank.cache.key(p)) for p in split.image_paths]

        def run():
            return [np.load(e, mmap_mode="r") for e in entries]

    arrays = benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    assert len(arrays) == N and arrays[0].dtype == np.uint8
    _rate(f"fetch {kind} {reader}", N / benchmark.stats.stats.median, note)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("cache", ["cold", "cached"])
def test_epoch(benchmark, splits, kind, workers, cache, tmp_path, torch_threads, note):
    rate = _epochs(benchmark, splits[kind], workers, cache, tmp_path / "cache")
    _rate(f"epoch {kind} {cache} workers={workers}", rate, note)


class _Segments:
    """The DataLoader's default transport in :class:`SharedBatches`' place: ``default_collate``, which in a worker
    stacks each tensor into a new shared-memory segment, sent as a file descriptor per tensor and batch."""

    def __init__(self, collate, num_workers: int, slots: int):
        pass

    def __call__(self, samples):
        return default_collate(samples)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("transport", ["slots", "segments"])
def test_worker_transport(benchmark, splits, workers, transport, tmp_path, monkeypatch, torch_threads, note):
    monkeypatch.setattr(loader_module, "SharedBatches", SharedBatches if transport == "slots" else _Segments)
    rate = _epochs(benchmark, splits["rsitmd-256px-tif"], workers, "cached", tmp_path / "cache")
    note(f"cached rsitmd-256px-tif epoch, {workers} workers, batches through {transport}: {rate:.0f} images/s")


def _epochs(benchmark, split: Split, workers: int, cache: str, root: Path) -> float:
    """Images per second of ``full-ft`` epochs through one loader (module docstring, ``test_epoch``)."""
    views = ImageViews(PREPROCESS)
    tokens = torch.zeros(N, 77, dtype=torch.int64)
    if cache == "cached":
        warm = ImageBank(split, ImageCache(root))
        for i in range(N):
            views.image(warm, i)
    plans = (LoaderPlan(epoch, 32, 0, 1, 0, epochs=epoch + 1) for epoch in range(100))  # no look-ahead past a round

    def setup():
        if cache == "cold":
            shutil.rmtree(root, ignore_errors=True)
        return (next(plans),), {}

    def epoch(plan: LoaderPlan) -> int:
        return sum(b["pixels"].shape[0] for b in loader(plan))

    with TrainLoader(split.caption_image, CaptionSamples(ImageBank(split, ImageCache(root)), views, tokens),
                     per_epoch="images", num_workers=workers) as loader:
        seen = benchmark.pedantic(epoch, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    assert seen == N // 32 * 32
    return seen / benchmark.stats.stats.median


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_start(benchmark, splits, workers, tmp_path, torch_threads, note):
    split = splits["rsitmd-256px-tif"]
    views = ImageViews(PREPROCESS)
    bank = ImageBank(split, ImageCache(tmp_path / "cache"))
    for i in range(N):
        views.image(bank, i)
    build = CaptionSamples(bank, views, torch.zeros(N, 77, dtype=torch.int64))

    def first_batch() -> torch.Tensor:
        with TrainLoader(split.caption_image, build, per_epoch="images", num_workers=workers) as loader:
            return next(iter(loader(LoaderPlan(0, 32, 0, 1, 0, epochs=1))))["pixels"]

    assert benchmark.pedantic(first_batch, rounds=3, iterations=1).shape[0] == 32
    note(f"first micro-batch of a new loader, {workers} workers: {benchmark.stats.stats.median * 1e3:.0f} ms")


@pytest.mark.parametrize("workers", [0, 2])
def test_full_ft_data_wait(benchmark, workers, tmp_path, monkeypatch, torch_threads, note):
    monkeypatch.setenv("RSITR_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RSITR_BENCH_CACHE", str(tmp_path / "cache"))  # epoch 1 decodes, epoch 2 reads the cache

    def run():
        return rsitr_bench.run({"method": "full-ft", "train": {"epochs": 2, "num_workers": workers},
                                "run": {"progress": False}})

    outcome = benchmark.pedantic(run, rounds=1, iterations=1)
    profile = outcome.metrics["per_seed"]["0"]["fit"]["train"]["profile"]
    for p in profile:
        steps_s = sum(v for k, v in p.items() if k.endswith("_s"))
        note(f"full-ft synthetic-rs/rsitr-tiny, num_workers={workers}, epoch {p['epoch']}: data-wait "
             f"{p['data_wait_fraction']:.1%} ({p['data_wait_s']:.2f} s of {steps_s:.2f} s over {p['steps']} steps; "
             f"forward {p['forward_s']:.2f} s, backward {p['backward_s']:.2f} s, optimiser {p['optimizer_s']:.2f} s)")
    assert [p["epoch"] for p in profile] == [1, 2]
