"""The training input pipeline: an epoch's samples, in micro-batches, through a ``torch.utils.data.DataLoader``.

:class:`TrainLoader` is a ``train_loader_factory`` of the engine (rsitr_bench/training/engine.py): called with
a :class:`~rsitr_bench.training.engine.LoaderPlan`, it returns that epoch's micro-batches of this rank.
Decoding and augmenting run in DataLoader worker processes (``num_workers``), overlapped with the training
step; the result does not depend on how many there are:

* **Which samples, in which order** is :func:`epoch_order`, seeded by (seed, epoch) only: every caption once
  (``captions``) or every image once with one of its captions (``images``); rank r takes every
  world_size-th sample; an incomplete trailing micro-batch is dropped.
* **Each sample's randomness** (its augmentation) comes from a seed of its own, drawn from (seed, epoch) by
  its position in the epoch's order (:func:`sample_seeds`); the sample is built under that seed with the
  global torch RNG forked (:func:`seeded`), never from a worker's RNG state. So 0, 1 or 8 workers, one rank
  or four, give every sample bit-identical pixels, and building samples leaves the training process's RNG
  (dropout masks) untouched.
* **Resume** asks for :meth:`EpochLoader.iter_from`: the micro-batches a resumed epoch skips are never
  built, let alone decoded.

One DataLoader serves every epoch of a ``fit``: with ``persistent_workers`` its workers (and whatever a
sample builder loaded in them) live across epochs; each epoch only hands them a new list of micro-batches.
As soon as an epoch's last micro-batch has been fetched, the workers are handed the next epoch's (the same
plan, epoch + 1; none after the plan's last epoch), so they build its first batches while the model is
evaluated instead of after; an epoch that asks for other batches (a resumed one) discards them. The
DataLoader draws its workers' base seed from a private generator, so iterating it consumes nothing of the
global RNG either. Micro-batches come back from the workers through a few shared-memory buffers each worker
reuses (rsitr_bench/training/shared_batches.py), not a new shared-memory segment per tensor and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rsitr_bench.training.engine import LoaderPlan, TrainConfig
from rsitr_bench.training.shared_batches import SharedBatches, plain_collate

#: What a sample builder returns: a mapping of tensors and numbers, collated into a micro-batch.
Sample = dict[str, Any]
#: Picks the stream of per-sample seeds apart from every other use of (seed, epoch).
_AUGMENT_STREAM = 0x5EED_A06


def epoch_order(caption_image: np.ndarray, seed: int, epoch: int, per_epoch: str = "captions") -> np.ndarray:
    """The captions one epoch visits, in order, the same on every rank.

    ``captions`` visits every caption once (the reference's epoch); ``images`` visits every image once with
    one of its captions drawn at random, five times cheaper per epoch on 5-caption data.
    """
    rng = np.random.default_rng([seed, epoch])
    if per_epoch == "captions":
        return rng.permutation(len(caption_image))
    if per_epoch == "images":
        owned = np.argsort(caption_image, kind="stable")
        starts = np.searchsorted(caption_image[owned], np.arange(caption_image.max() + 1))
        counts = np.bincount(caption_image)
        pick = starts + (rng.random(len(counts)) * counts).astype(np.int64)
        return owned[pick][rng.permutation(len(counts))]
    raise ValueError(f"per_epoch={per_epoch!r}; choose 'captions' or 'images'")


def sample_seeds(seed: int, epoch: int, n: int) -> np.ndarray:
    """One seed per position of an epoch's order (int64, non-negative), a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, _AUGMENT_STREAM]).integers(0, 2**63 - 1, size=n, dtype=np.int64)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global torch CPU RNG seeded to ``seed``, restoring its state afterwards.

    torchvision's transforms draw their parameters from that RNG (on the CPU, whatever device the pixels
    are on), so this is what makes an augmentation a function of the sample rather than of the process.
    Only the CPU generator is touched: ``torch.manual_seed`` would also queue a CUDA reseed, with a stack
    trace, on every call (measured: 2.4 ms per sample, more than decoding one).
    """
    generator = torch.random.default_generator
    state = generator.get_state()
    generator.manual_seed(int(seed))
    try:
        yield
    finally:
        generator.set_state(state)


def loader_settings(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """:class:`TrainLoader`'s DataLoader arguments from the ``train`` section; memory is pinned only for CUDA."""
    return {"num_workers": config.num_workers, "prefetch_factor": config.prefetch_factor,
            "persistent_workers": config.persistent_workers, "pin_memory": config.pin_memory and device.type == "cuda"}


class _SeededSamples(Dataset):
    """``dataset[(item, seed)]``: the sample ``build(item)`` built under ``seed``, with ``seed`` attached."""

    def __init__(self, build: Callable[[int], Sample]):
        self.build = build

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        item, seed = key
        with seeded(seed):
            sample = self.build(item)
        return {**sample, "seed": seed}


class _Batches:
    """The DataLoader's batch sampler: whatever list of micro-batches the current epoch handed it."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrainLoader:
    """The engine's ``train_loader_factory`` over one DataLoader (module docstring).

    Arguments:
        caption_image: owner image of every caption (``Split.caption_image``).
        build: ``build(caption) -> sample``, run in the workers under the sample's seed.
        per_epoch: ``captions`` or ``images`` (:func:`epoch_order`).
        collate: micro-batch from samples (default: torch's ``default_collate``, stacking into ordinary
            memory: :func:`~rsitr_bench.training.shared_batches.plain_collate`); each sample has ``seed``. With
            workers, micro-batches travel through reused shared memory
            (:class:`~rsitr_bench.training.shared_batches.SharedBatches`).
        prepare: applied to each collated micro-batch in the training process (e.g. move it to the device,
            augment and normalise there); None keeps it as collated.
        num_workers, prefetch_factor, persistent_workers, pin_memory: passed to the DataLoader (the last two
            only with workers; pin only when training on CUDA).

    Use it as a context manager, or call :meth:`close`, to stop persistent workers when training ends.
    """

    def __init__(self, caption_image: np.ndarray, build: Callable[[int], Sample], *, per_epoch: str = "captions",
                 collate: Callable[[list[Sample]], Any] = plain_collate,
                 prepare: Callable[[Any], Any] | None = None, num_workers: int = 0, prefetch_factor: int = 2,
                 persistent_workers: bool = True, pin_memory: bool = False):
        epoch_order(np.asarray(caption_image), 0, 0, per_epoch)  # an unknown per_epoch fails here, not mid-fit
        self.caption_image = np.asarray(caption_image)
        self.per_epoch = per_epoch
        self.prepare = prepare
        self._batches = _Batches()
        self._pending: tuple[list[list[tuple[int, int]]], Iterator[Any]] | None = None
        workers = num_workers > 0
        # slots: the prefetch_factor batches a worker may have in flight, and the one it is building
        self._transport = SharedBatches(collate, num_workers, prefetch_factor + 1) if workers else None
        self._loader: DataLoader | None = DataLoader(
            _SeededSamples(build), batch_sampler=self._batches, num_workers=num_workers,
            collate_fn=self._transport or collate,
            pin_memory=pin_memory, prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=persistent_workers and workers, generator=torch.Generator().manual_seed(0))

    def __call__(self, plan: LoaderPlan) -> EpochLoader:
        return EpochLoader(self, plan)

    def close(self) -> None:
        """Release the DataLoader; its workers exit once its last iterator is gone."""
        self._loader = self._pending = None
        if self._transport is not None:
            self._transport.close()

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, batches: list[list[tuple[int, int]]], following: Callable[[], list] | None) -> Iterator[Any]:
        """Yield ``batches``, prepared; once the last is fetched, start on ``following()`` (workers only)."""
        if self._pending is not None and self._pending[0] == batches:
            fetched = self._pending[1]
        else:
            fetched = self._start(batches)
        self._pending = None
        for i in range(len(batches)):
            batch = next(fetched)
            if i == len(batches) - 1 and following is not None and self._loader.num_workers > 0:
                upcoming = following()
                self._pending = (upcoming, self._start(upcoming))
            yield batch if self.prepare is None else self.prepare(batch)

    def _start(self, batches: list[list[tuple[int, int]]]) -> Iterator[Any]:
        if self._loader is None:
            raise RuntimeError("this TrainLoader was closed")
        self._batches.batches = batches
        return iter(self._loader)


class EpochLoader:
    """One epoch of this rank's micro-batches (the engine's loader contract)."""

    def __init__(self, owner: TrainLoader, plan: LoaderPlan):
        order = epoch_order(owner.caption_image, plan.seed, plan.epoch, owner.per_epoch)
        seeds = sample_seeds(plan.seed, plan.epoch, len(order))
        mine = slice(plan.rank, None, plan.world_size)
        self.keys: list[tuple[int, int]] = list(zip(order[mine].tolist(), seeds[mine].tolist(), strict=True))
        self.plan = plan
        self.owner = owner

    def __len__(self) -> int:
        return len(self.keys) // self.plan.micro_batch_size

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Any]:
        """The micro-batches from number ``start`` on; the ones before it are not built."""
        plan = self.plan

        def following() -> list[list[tuple[int, int]]]:
            return EpochLoader(self.owner, replace(plan, epoch=plan.epoch + 1)).batches(0)

        last = plan.epochs is not None and plan.epoch + 1 >= plan.epochs
        return self.owner._run(self.batches(start), None if last else following)

    def batches(self, start: int) -> list[list[tuple[int, int]]]:
        """The (caption, seed) keys of micro-batches ``start…`` of this epoch."""
        m = self.plan.micro_batch_size
        return [self.keys[b * m:(b + 1) * m] for b in range(start, len(self))]


def indexed_batches(n: int, build: Callable[[int], Sample], batch_size: int, *,
                    collate: Callable[[list[Sample]], Any] = plain_collate, num_workers: int = 0,
                    pin_memory: bool = False) -> Iterator[Any]:
    """Items ``0..n-1`` in order, in batches of ``batch_size`` (the last may be short), built by ``build`` in
    ``num_workers`` worker processes, the batches coming through reused shared memory as in :class:`TrainLoader`:
    how a split's images are read for scoring. Items that fit one batch are built in this process: with
    nothing to overlap, starting workers would only cost time."""
    workers = num_workers if n > batch_size else 0
    prefetch = 2 if workers else None
    transport = SharedBatches(collate, workers, prefetch + 1) if workers else None
    try:
        yield from DataLoader(_Indexed(n, build), batch_size=batch_size, num_workers=workers,
                              collate_fn=transport or collate, pin_memory=pin_memory and workers > 0,
                              prefetch_factor=prefetch, generator=torch.Generator().manual_seed(0))
    finally:
        if transport is not None:
            transport.close()


class _Indexed(Dataset):
    def __init__(self, n: int, build: Callable[[int], Sample]):
        self.n, self.build = n, build

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        return self.build(index)
