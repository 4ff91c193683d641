"""The training input pipeline: the decoded-image and view caches, the DataLoader-based loader (sampling,
per-sample seeds, worker-count independence, resume without decoding), the workers' shared-memory batches,
device-side augmentation and the per-stage profile of the engine."""

from __future__ import annotations

import json
import os
import pickle
import threading
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing  # noqa: F401  (registers torch's shared-memory reductions with ForkingPickler)
from PIL import Image
from torch.utils.data import default_collate
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

import rsitr_bench.training.image_cache as image_cache
import rsitr_bench.training.shared_batches as shared_batches
from rsitr_bench.cli.main import main
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import Split
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.context import Perspective
from rsitr_bench.methods.mps_clip import inputs
from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
from rsitr_bench.training.clip_training import CaptionSamples, ImageViews, OnDevice, train_transform, view_settings
from rsitr_bench.training.engine import Engine, LoaderPlan, TrainConfig
from rsitr_bench.training.image_cache import ImageBank, ImageCache
from rsitr_bench.training.loader import TrainLoader, epoch_order, indexed_batches, sample_seeds, seeded
from rsitr_bench.training.profile import STAGES
from rsitr_bench.training.shared_batches import SharedBatches
from tests.fixtures.mpsclip_models import ToyMPSCLIP, collate, run_context, synthetic_samples, trainable_state
from tests.helpers import home_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
# open_clip's eval transform, shrunk: PIL steps, ToTensor, Normalize
PREPROCESS = T.Compose([T.Resize(24, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(24), T.ToTensor(),
                        T.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))])


def _write_images(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """``n`` noisy images of different sizes, as PNG, JPEG and TIFF in turn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(30 + 2 * i, 36, 3), dtype=np.uint8)
        path = folder / f"img{i}.{('png', 'jpg', 'tif')[i % 3]}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _split(paths: list[Path], per_image: int = 2) -> Split:
    owners = np.repeat(np.arange(len(paths)), per_image)
    return Split(dataset="toy", name="train", image_names=[p.name for p in paths], image_paths=list(paths),
                 captions=[f"caption {j}" for j in range(len(owners))], caption_image=owners)


def _count_decodes(monkeypatch) -> list[Path]:
    calls: list[Path] = []

    def counting(path, record=""):
        calls.append(Path(path))
        return load_rgb(path, record)

    monkeypatch.setattr(image_cache, "load_rgb", counting)
    return calls


# ------------------------------------------------------------------------------------------ the cache


def test_cached_images_are_the_decoded_pixels_and_a_second_pass_decodes_nothing(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "images")
    decodes = _count_decodes(monkeypatch)
    first = [ImageCache(tmp_path / "cache").array(p) for p in paths]
    assert decodes == paths
    for path, pixels in zip(paths, first, strict=True):
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, np.asarray(load_rgb(path)))
    cache = ImageCache(tmp_path / "cache")  # a new process would see the same
    again = [cache.array(p) for p in paths]
    assert decodes == paths and cache.counters == {"image_cache_hits": len(paths)}
    assert all(not a.flags.owndata and not a.flags.writeable for a in again)  # views of read-only mappings
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    entries = list((tmp_path / "cache" / "images").rglob("*.npy"))
    assert len(entries) == len(paths) and all(np.load(e).dtype == np.uint8 for e in entries)  # plain .npy files


def test_an_image_whose_bytes_change_misses_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    Image.new("RGB", (20, 10), "red").save(path)
    decodes = _count_decodes(monkeypatch)
    cache = ImageCache(tmp_path / "cache")
    assert (cache.array(path)[..., 0] == 255).all()
    Image.new("RGB", (20, 10), "blue").save(path)  # same size: only the bytes differ
    stat = os.stat(path)  # the digest is memoised by (path, size, mtime); an edit moves the mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = ImageCache(tmp_path / "cache").array(path)
    assert (changed[..., 2] == 255).all() and (changed[..., 0] == 0).all()
    assert len(decodes) == 2
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2  # the old entry stays valid for the old bytes


def test_missing_and_undecodable_images_name_the_file_and_the_record(tmp_path):
    bank = ImageBank(_split([tmp_path / "gone.jpg", tmp_path / "junk.png"], 1), ImageCache(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"gone\.jpg does not exist \(referenced by toy train image 0\)"):
        bank.array(0)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"junk\.png could not be decoded \(referenced by toy train image 1\)"):
        bank.array(1)


def test_a_torn_entry_is_decoded_again(tmp_path, monkeypatch):
    (path,) = _write_images(tmp_path / "images", 1)
    cache = ImageCache(tmp_path / "cache")
    pixels = np.array(cache.array(path))
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    entry.write_bytes(entry.read_bytes()[:200])  # a crash after the rename, before the data reached disk
    decodes = _count_decodes(monkeypatch)
    assert np.array_equal(ImageCache(tmp_path / "cache").array(path), pixels) and decodes == [path]
    assert np.array_equal(ImageCache(tmp_path / "cache").array(path), pixels) and decodes == [path]


def test_concurrent_creators_leave_one_complete_entry(tmp_path):
    (path,) = _write_images(tmp_path / "images", 1)
    results, start = [], threading.Barrier(6)

    def create() -> None:
        start.wait()
        results.append(np.array(ImageCache(tmp_path / "cache").array(path)))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = np.asarray(load_rgb(path))
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)
    assert [p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [".npy"]  # no temporaries
    assert np.array_equal(ImageCache(tmp_path / "cache").array(path), expected)


# -------------------------------------------------------------------------------------------- views


def _uncached_view(preprocess, path: Path) -> torch.Tensor:
    """The backbone's PIL steps on the decoded file, as the pipeline did before the view cache."""
    return pil_to_tensor(T.Compose(preprocess.transforms[:2])(load_rgb(path)))


def test_a_deterministic_view_is_cached_resized_and_bit_identical_to_the_transform(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "images")  # PNG, JPEG, TIFF; 30-40 × 36 px, so resize and crop both act
    views = ImageViews(PREPROCESS)
    bank = ImageBank(_split(paths, 1), ImageCache(tmp_path / "cache"))
    first = [views.image(bank, i) for i in range(len(paths))]
    assert bank.cache.counters == {"view_cache_misses": 6, "image_cache_misses": 6}
    decodes = _count_decodes(monkeypatch)
    bank = ImageBank(_split(paths, 1), ImageCache(tmp_path / "cache"))  # a new process would see the same
    again = [views.image(bank, i) for i in range(len(paths))]
    assert decodes == [] and bank.cache.counters == {"view_cache_hits": 6}  # no decode, no full-size read
    for path, a, b in zip(paths, first, again, strict=True):
        expected = _uncached_view(PREPROCESS, path)
        assert a.dtype == torch.uint8 and a.shape == (3, 24, 24)
        assert torch.equal(a, expected) and torch.equal(b, expected)
    entries = list((tmp_path / "cache" / "views").rglob("*.npy"))
    assert len(entries) == 6 and all(np.load(e).shape == (3, 24, 24) for e in entries)  # plain .npy files
    again[0].zero_()  # mapped copy-on-write: writable, and the entry keeps its pixels
    assert torch.equal(views.image(bank, 0), first[0])


def test_a_view_whose_image_bytes_change_is_computed_again(tmp_path):
    path = tmp_path / "a.tif"
    Image.new("RGB", (40, 30), "red").save(path)
    views = ImageViews(PREPROCESS)
    assert (views.image(ImageBank(_split([path], 1), ImageCache(tmp_path / "cache")), 0)[0] == 255).all()
    Image.new("RGB", (40, 30), "blue").save(path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    bank = ImageBank(_split([path], 1), ImageCache(tmp_path / "cache"))
    changed = views.image(bank, 0)
    assert (changed[2] == 255).all() and (changed[0] == 0).all()
    assert bank.cache.counters["view_cache_misses"] == 1 and "view_cache_hits" not in bank.cache.counters


def _geometry(size: int, interpolation: T.InterpolationMode, crop: int) -> T.Compose:
    return T.Compose([T.Resize(size, interpolation=interpolation), T.CenterCrop(crop), T.ToTensor()])


def test_a_view_whose_settings_change_is_computed_again(tmp_path):
    (path,) = _write_images(tmp_path / "images", 1)
    bicubic = T.InterpolationMode.BICUBIC
    variants = [PREPROCESS, _geometry(24, T.InterpolationMode.BILINEAR, 24), _geometry(20, bicubic, 20),
                _geometry(24, bicubic, 22)]
    settings = [ImageViews(v).cache_settings for v in variants]
    assert None not in settings and len(set(settings)) == len(variants)
    for preprocess in variants:
        bank = ImageBank(_split([path], 1), ImageCache(tmp_path / "cache"))
        assert torch.equal(ImageViews(preprocess).image(bank, 0), _uncached_view(preprocess, path))
        assert bank.cache.counters["view_cache_misses"] == 1
    bank = ImageBank(_split([path], 1), ImageCache(tmp_path / "cache"))
    ImageViews(_geometry(24, bicubic, 24)).image(bank, 0)  # PREPROCESS's geometry, built anew: the same entry
    assert bank.cache.counters == {"view_cache_hits": 1}
    assert len(list((tmp_path / "cache" / "views").rglob("*.npy"))) == len(variants)


def test_random_or_unnameable_views_are_never_cached(tmp_path):
    (path,) = _write_images(tmp_path / "images", 1)
    odd = T.Compose([T.Lambda(lambda im: im.rotate(90)), T.CenterCrop(24), T.ToTensor()])
    assert view_settings(T.Compose(odd.transforms[:2])) is None  # a lambda: no stable name
    assert ImageViews(PREPROCESS, "crop-flip", "cpu").cache_settings is None  # random on the CPU
    assert ImageViews(PREPROCESS, "crop-flip", "device").cache_settings is not None  # the CPU half is fixed
    bank = ImageBank(_split([path], 1), ImageCache(tmp_path / "cache"))
    assert torch.equal(ImageViews(odd).image(bank, 0), _uncached_view(odd, path))
    with seeded(5):
        flipped = ImageViews(PREPROCESS, "crop-flip", "cpu").image(bank, 0)
    with seeded(5):
        assert torch.equal(flipped, pil_to_tensor(train_transform(T.Compose(PREPROCESS.transforms[:2]),
                                                                  "crop-flip")(load_rgb(path))))
    assert not (tmp_path / "cache" / "views").exists()


# ------------------------------------------------------------------------------- shared-memory batches


def _ragged(samples: list[dict]) -> dict:
    """A collate with tensors of every kind a batch may hold: stacked, concatenated (ragged), 0-d, in nested
    containers, next to values that are not tensors."""
    return {"pixels": torch.stack([s["pixels"] for s in samples]), "subs": torch.cat([s["subs"] for s in samples]),
            "meta": [torch.tensor(len(samples) > 1), (torch.tensor(2.5), "tag")],
            "half": torch.stack([s["pixels"].transpose(1, 2).to(torch.float16) for s in samples]),
            "names": ["a"] * len(samples)}


def _samples(n: int, subs: int) -> list[dict]:
    gen = torch.Generator().manual_seed(n * 10 + subs)
    return [{"pixels": torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8, generator=gen),
             "subs": torch.randint(-9, 9, (subs, 5), generator=gen)} for _ in range(n)]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _send(message) -> bytes:
    """Pickled as a DataLoader worker's queue does: shared-memory tensors travel as handles, not bytes."""
    return bytes(ForkingPickler.dumps(message))


def test_worker_batches_travel_through_reused_slots_and_arrive_as_the_batch(monkeypatch):
    monkeypatch.setattr(shared_batches, "get_worker_info", lambda: SimpleNamespace(id=1))  # as in worker 1
    ring = SharedBatches(_ragged, num_workers=2, slots=2)
    batches = [_samples(3, 2), _samples(3, 1), _samples(3, 40), _samples(2, 0)]
    try:
        first, second = ring(batches[0]), ring(batches[1])  # slots 0 and 1, each sending its new buffer
        assert first.args[3] is not None and second.args[3] is not None
        sent = [_send(first), _send(second)]
        fallback = ring(batches[2])  # both slots hold unread batches: this one goes the ordinary way
        assert type(fallback) is dict and _same(fallback, _ragged(batches[2]))
        assert _same(pickle.loads(sent[0]), _ragged(batches[0]))  # read: slot 0 is free again
        grown = ring(batches[2])  # slot 0, too small for 40 sub-rows: a larger buffer travels with it
        assert grown.args[2] == 0 and grown.args[3] is not None
        assert _same(pickle.loads(sent[1]), _ragged(batches[1]))
        assert _same(pickle.loads(_send(grown)), _ragged(batches[2]))
        reused = ring(batches[3])  # slot 1 again: its buffer is already with the receiver
        assert reused.args[2] == 1 and reused.args[3] is None
        assert _same(pickle.loads(_send(reused)), _ragged(batches[3]))
        in_flight = _send(ring(batches[3]))
    finally:
        ring.close()
    assert pickle.loads(in_flight) is None  # a batch arriving after its loader closed is dropped
    monkeypatch.setattr(shared_batches, "get_worker_info", lambda: None)
    assert _same(SharedBatches(_ragged, 0, 2)(batches[0]), _ragged(batches[0]))  # no worker: the batch itself


@pytest.mark.slow
def test_scoring_batches_are_the_same_through_workers():
    def build(i: int) -> dict:
        return {"pixels": torch.full((3, 2, 2), i, dtype=torch.uint8), "subs": torch.arange(i % 3 * 5).view(-1, 5)}

    serial = list(indexed_batches(10, build, 4, collate=_ragged))
    assert [b["pixels"].shape[0] for b in serial] == [4, 4, 2]
    assert all(_same(a, b) for a, b in zip(serial, indexed_batches(10, build, 4, collate=_ragged, num_workers=2),
                                           strict=True))
    regular = [{"pixels": torch.full((3, 2, 2), i, dtype=torch.uint8), "ids": i, "name": "x"} for i in range(3)]
    assert _same(list(indexed_batches(3, regular.__getitem__, 4)), [default_collate(regular)])


# ------------------------------------------------------------------------------------------- sampling


def _no_build(caption: int) -> dict:
    raise AssertionError("these tests look at the epoch's keys only")


def _reference_order(caption_image: np.ndarray, plan: LoaderPlan, per_epoch: str) -> list[list[int]]:
    """The micro-batches of the hand-written loader this pipeline replaced (its sampling, verbatim)."""
    rng = np.random.default_rng([plan.seed, plan.epoch])
    if per_epoch == "captions":
        samples = rng.permutation(len(caption_image))
    else:
        owned = np.argsort(caption_image, kind="stable")
        starts = np.searchsorted(caption_image[owned], np.arange(caption_image.max() + 1))
        counts = np.bincount(caption_image)
        pick = starts + (rng.random(len(counts)) * counts).astype(np.int64)
        samples = owned[pick][rng.permutation(len(counts))]
    mine = samples[plan.rank::plan.world_size]
    m = plan.micro_batch_size
    return [mine[b * m:(b + 1) * m].tolist() for b in range(len(mine) // m)]


@pytest.mark.parametrize("per_epoch", ["captions", "images"])
@pytest.mark.parametrize("plan", [LoaderPlan(0, 3, 0, 1, 5), LoaderPlan(2, 2, 1, 2, 9), LoaderPlan(1, 4, 2, 3, 0)])
def test_the_epoch_order_is_the_replaced_loaders_sampling(plan, per_epoch):
    owners = np.repeat(np.arange(9), [1, 2, 3, 5, 1, 2, 5, 5, 1])
    loader = TrainLoader(owners, _no_build, per_epoch=per_epoch)(plan)
    got = [[c for c, _ in loader.keys[b * plan.micro_batch_size:(b + 1) * plan.micro_batch_size]]
           for b in range(len(loader))]
    assert got == _reference_order(owners, plan, per_epoch)


def test_ranks_share_no_sample_and_seeds_follow_the_global_position():
    owners = np.repeat(np.arange(10), 3)
    order = epoch_order(owners, 4, 1)
    seeds = sample_seeds(4, 1, len(order))
    ranks = [TrainLoader(owners, _no_build)(LoaderPlan(1, 4, r, 3, 4)) for r in range(3)]
    assert sum(len(r) for r in ranks) == 6  # 10 samples each, 2 full micro-batches of 4
    keys = [k for r in ranks for k in r.keys]
    assert sorted(keys) == sorted(zip(order.tolist(), seeds.tolist(), strict=True))
    one_rank = TrainLoader(owners, _no_build)(LoaderPlan(1, 4, 0, 1, 4))
    assert one_rank.keys[3] == ranks[0].keys[1]  # global position 3: the same sample with the same seed


# --------------------------------------------------------------------------------------------- loader


def _caption_loader(tmp_path: Path, augment: str, augment_on: str, workers: int) -> tuple[TrainLoader, Split]:
    split = _split(_write_images(tmp_path / "images", 5))
    views = ImageViews(PREPROCESS, augment, augment_on)
    tokens = torch.arange(len(split.captions) * 4).reshape(-1, 4)
    build = CaptionSamples(ImageBank(split, ImageCache(tmp_path / "cache")), views, tokens)
    return TrainLoader(split.caption_image, build, per_epoch="captions", prepare=OnDevice(views, CPU),
                       num_workers=workers, prefetch_factor=2), split


def _epochs(loader: TrainLoader, n: int = 2) -> list[dict]:
    return [b for epoch in range(n) for b in loader(LoaderPlan(epoch, 3, 0, 1, 11))]


@pytest.mark.slow
@pytest.mark.parametrize(("augment", "augment_on"), [("none", "cpu"), ("crop-flip", "cpu"), ("crop-flip", "device")])
def test_micro_batches_are_bit_identical_whatever_the_worker_count(tmp_path, augment, augment_on):
    runs = []
    for workers in (0, 1, 2):
        loader, _ = _caption_loader(tmp_path, augment, augment_on, workers)
        with loader:
            runs.append(_epochs(loader))  # two epochs: persistent workers are handed the second
            # with workers, the micro-batches came through each worker's reused shared-memory slots
            assert workers == 0 or {w for w, _ in loader._transport.received} == set(range(workers))
    assert len(runs[0]) == 6 and runs[0][0]["pixels"].dtype == torch.float32
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_an_epoch_that_asks_for_other_batches_than_the_prepared_ones_gets_its_own(tmp_path):
    """With workers, the next epoch is started as the last batch is fetched; a resumed epoch differs."""
    runs = []
    for workers in (0, 2):
        loader, _ = _caption_loader(tmp_path, "crop-flip", "cpu", workers)
        with loader:
            first = list(loader(LoaderPlan(0, 3, 0, 1, 11, epochs=3)))  # prepares epoch 1 from its start
            resumed = list(loader(LoaderPlan(1, 3, 0, 1, 11, epochs=3)).iter_from(1))
            last = list(loader(LoaderPlan(2, 3, 0, 1, 11, epochs=3)))
        runs.append(first + resumed + last)
    assert len(runs[0]) == 3 + 2 + 3
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_pixels_are_the_backbones_transform_bit_for_bit(tmp_path):
    loader, split = _caption_loader(tmp_path, "none", "cpu", 0)
    plan = LoaderPlan(0, 3, 0, 1, 11)
    epoch = loader(plan)
    for keys, batch in zip([epoch.keys[i:i + 3] for i in range(0, 9, 3)], epoch, strict=True):
        owners = [int(split.caption_image[c]) for c, _ in keys]
        expected = torch.stack([PREPROCESS(load_rgb(split.image_paths[i])) for i in owners])
        assert torch.equal(batch["pixels"], expected) and batch["ids"].tolist() == owners


def test_cpu_augmentation_is_the_pil_transform_under_the_samples_seed(tmp_path):
    loader, split = _caption_loader(tmp_path, "randaugment", "cpu", 0)
    epoch = loader(LoaderPlan(1, 3, 0, 1, 11))
    batch = next(iter(epoch))
    transform = train_transform(PREPROCESS, "randaugment")
    expected = []
    for caption, seed in epoch.keys[:3]:
        with seeded(seed):
            expected.append(transform(load_rgb(split.image_paths[int(split.caption_image[caption])])))
    assert torch.equal(batch["pixels"], torch.stack(expected))


def test_device_augmentation_is_seeded_per_sample(tmp_path):
    device, _ = _caption_loader(tmp_path, "crop-flip", "device", 0)
    plain, _ = _caption_loader(tmp_path, "none", "cpu", 0)
    first, again, none = _epochs(device, 1), _epochs(device, 1), _epochs(plain, 1)
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(first, none, strict=True))
    assert first[0]["pixels"].shape == none[0]["pixels"].shape == (3, 3, 24, 24)


def test_loading_leaves_the_global_rng_alone(tmp_path):
    loader, _ = _caption_loader(tmp_path, "randaugment", "device", 0)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    _epochs(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_second_epoch_decodes_nothing(tmp_path, monkeypatch):
    decodes = _count_decodes(monkeypatch)
    loader, split = _caption_loader(tmp_path, "crop-flip", "cpu", 0)
    list(loader(LoaderPlan(0, 2, 0, 1, 1)))
    assert sorted(decodes) == sorted(split.image_paths)
    list(loader(LoaderPlan(1, 2, 0, 1, 1)))
    assert len(decodes) == split.n_images


def test_resuming_skips_micro_batches_without_building_them(tmp_path):
    built: list[int] = []
    owners = np.repeat(np.arange(6), 2)

    def build(caption: int) -> dict:
        built.append(caption)
        return {"caption": caption}

    plan = LoaderPlan(0, 2, 0, 1, 3)
    full = list(TrainLoader(owners, build)(plan))
    built.clear()
    tail = list(TrainLoader(owners, build)(plan).iter_from(4))
    assert len(built) == 4 and all(torch.equal(a["caption"], b["caption"]) for a, b in zip(full[4:], tail, strict=True))


@pytest.mark.slow
def test_mps_clip_samples_with_sub_images_are_identical_across_worker_counts(tmp_path):
    split = _split(_write_images(tmp_path / "images", 4))
    found = [[Perspective("a", (2, 3, 20, 25)), Perspective("b", (10, 0, 36, 30))], [],
             [Perspective("c", (0, 0, 5, 5))], [Perspective("d", (4, 4, 30, 30))]]
    runs = []
    for workers in (0, 2):
        views = ImageViews(PREPROCESS, "crop-flip", "cpu")
        images = inputs.ImageSamples(ImageBank(split, ImageCache(tmp_path / "cache")), found, "crop", views)
        build = inputs.CaptionSamples(images, torch.zeros(len(split.captions), 4, dtype=torch.int64))
        with TrainLoader(split.caption_image, build, per_epoch="images", collate=inputs.collate,
                         prepare=inputs.OnDevice(views, CPU), num_workers=workers) as loader:
            runs.append(list(loader(LoaderPlan(0, 4, 0, 1, 2))))
    (a,), (b,) = runs
    assert torch.equal(a["packed"].counts, torch.tensor([len(found[i]) for i in a["ids"].tolist()]))
    assert a["packed"].pixels.shape == (4, 3, 24, 24)
    assert torch.equal(a["packed"].owner, torch.repeat_interleave(torch.arange(4), a["packed"].counts))
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["packed"].pixels, b["packed"].pixels)
    assert torch.equal(a["packed"].owner, b["packed"].owner) and torch.equal(a["ids"], b["ids"])


# ------------------------------------------------------------------------------------ engine: resume, profile


SAMPLES = synthetic_samples(12, seed=1)
RESUME_CFG = dict(lr=1e-3, epochs=2, batch_size=4, micro_batch_size=2, checkpoint_every=2, device="cpu", seed=7)


class _ToyBuild:
    def __init__(self) -> None:
        self.built = 0

    def __call__(self, caption: int) -> dict:
        self.built += 1
        return SAMPLES[caption]


class _CrashAt:
    def __init__(self, at: int) -> None:
        self.calls, self.at = 0, at

    def __call__(self, batch: dict) -> dict:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("simulated crash")
        return batch


def _val(model, split):
    return {"mR": float(sum(p.detach().double().sum() for p in model.mpr.parameters()))}


@pytest.mark.slow
def test_a_resumed_run_is_bit_identical_and_decodes_nothing_it_skips(tmp_path, caplog):
    owners = np.array([s["id"] for s in SAMPLES])

    def fit(run_dir: Path, build, prepare=None) -> tuple[ToyMPSCLIP, object]:
        model = ToyMPSCLIP()
        with TrainLoader(owners, build, collate=collate, prepare=prepare) as loader:
            summary = Engine(TrainConfig(**RESUME_CFG), run_context(run_dir)).fit(
                model, loader, MPSCLIPLoss("pre_restore", mpc_scale=10.0), _val)
        return model, summary

    with caplog.at_level("INFO", logger="rsitr-test"):
        model_a, a = fit(tmp_path / "a", _ToyBuild())
    # 12 captions, 6 micro-batches of 2 per epoch; the crash fetches micro-batch 5 of epoch 2, after the
    # checkpoint of step 4 (the first of epoch 2): the resumed run skips 2 micro-batches and builds 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "b", _ToyBuild(), _CrashAt(6 + 5))
    build = _ToyBuild()
    model_c, c = fit(tmp_path / "b", build)
    assert c.resumed_from_step == 4 and build.built == 4 * 2
    assert c.history == a.history
    state_a, state_c = trainable_state(model_a), trainable_state(model_c)
    assert all(torch.equal(state_a[n], state_c[n]) for n in state_a)

    # the profile: one entry per epoch, every stage, in the summary and in the log
    assert [p["epoch"] for p in a.profile] == [1, 2] and [p["steps"] for p in a.profile] == [3, 3]
    assert all(p[f"{s}_s"] >= 0 for p in a.profile for s in STAGES)
    assert all(0 <= p["data_wait_fraction"] < 1 and p["forward_s"] > 0 for p in a.profile)
    assert [p["steps"] for p in c.profile] == [3, 2]  # epoch 1 from the checkpoint, epoch 2 from step 4 on
    lines = [r.getMessage() for r in caplog.records if "profile:" in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2 profile: data-wait ")
    assert "forward" in lines[0] and "optimizer" in lines[0] and "over 3 steps" in lines[0]


@pytest.mark.slow
def test_full_ft_with_workers_logs_its_profile_to_run_log_and_result(capsys):
    args = ["--no-progress", "--set", "dataset.n_train=16", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8",
            "--set", "train.epochs=2", "--set", "train.batch_size=8", "--set", "eval.bootstrap=20",
            "--set", "train.num_workers=1", "--set", "method.augment=crop-flip"]
    assert main(["run", "--method", "full-ft", *args]) == 0
    capsys.readouterr()
    (row,) = home_registry().list()
    run_dir = home_registry().run_dir(row.id)
    log = (run_dir / "run.log").read_text()
    assert "epoch 1/2 profile: data-wait" in log and "epoch 2/2 profile: data-wait" in log
    train = json.loads((run_dir / "metrics.json").read_text())["per_seed"]["0"]["fit"]["train"]
    assert [p["epoch"] for p in train["profile"]] == [1, 2] and all(p["steps"] == 2 for p in train["profile"])
    assert len(train["history"]) == 2
