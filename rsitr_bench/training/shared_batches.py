"""Micro-batches from DataLoader workers to the training process through reused shared memory.

By default a DataLoader worker sends every tensor of every batch in a shared-memory segment made for it: the
kernel allocates and zeroes fresh tmpfs pages (4.8 MB for 32 224-px uint8 images), the worker fills them and
passes one file descriptor per tensor, each through a socket handshake, and the training process maps each
segment and unmaps it when the batch is dropped. On the 2-core development machine that cost about 6 ms per
such batch, more than building the batch from the view cache (docs/performance.md, "Input pipeline").

:class:`SharedBatches` wraps a collate function so that each worker keeps a few shared byte buffers (*slots*)
for the life of the DataLoader. The worker collates into ordinary memory (:func:`plain_collate`), copies the
batch's tensors into its next slot and sends only where each lies (and the slot's buffer itself the first time
it is used or after it grew). Unpickling that message in the training process copies the batch out of the
slot, into one allocation for the whole batch, and frees the slot; so what the DataLoader yields is exactly
the batch the collate function made, whatever the worker count, and nothing downstream knows about slots.

A worker takes its slots in turn under a semaphore that the training process releases as it copies one out,
so a slot is never written while its last batch is unread; a worker that finds no free slot (the training
process is ``slots`` batches behind) sends that batch the ordinary way rather than wait.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

#: Each tensor starts at a multiple of this many bytes in a slot (any dtype can be viewed there).
_ALIGN = 64
#: The open rings of this process, by id: where an arriving batch finds its slot's buffer.
_RINGS: dict[str, SharedBatches] = {}
_IDS = itertools.count()


def _stack(batch: list[torch.Tensor], *, collate_fn_map: dict | None = None) -> torch.Tensor:
    return torch.stack(batch, 0)


_PLAIN = {**default_collate_fn_map, torch.Tensor: _stack}


def plain_collate(samples: list[Any]) -> Any:
    """``torch.utils.data.default_collate``, except that tensors are stacked into ordinary memory in a worker
    too (``default_collate`` stacks them into a fresh shared-memory segment there, the cost this module avoids)."""
    return collate(samples, collate_fn_map=_PLAIN)


class SharedBatches:
    """A collate function for a DataLoader with ``num_workers`` workers whose batches travel through
    ``slots`` reused shared buffers per worker (module docstring). In the training process (no workers) it is
    the wrapped collate function.

    Call :meth:`close` when the DataLoader is done, to release the training process's mappings of the slots.
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any], num_workers: int, slots: int):
        self.collate_fn = collate_fn
        self.id = f"{os.getpid()}-{next(_IDS)}"
        self.slots = slots
        self.free = [multiprocessing.Semaphore(slots) for _ in range(num_workers)]
        self.received: dict[tuple[int, int], torch.Tensor] = {}  # training process: (worker, slot) → buffer
        self._pid, self._own, self._turn = os.getpid(), {}, 0  # a worker's slots and the next one to take
        _RINGS[self.id] = self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "received": {}, "_own": {}}

    def close(self) -> None:
        _RINGS.pop(self.id, None)
        self.received = {}

    def __call__(self, samples: list[Any]) -> Any:
        batch = self.collate_fn(samples)
        worker = get_worker_info()
        if worker is None:
            return batch
        tensors: list[torch.Tensor] = []
        structure = _flatten(batch, tensors)
        if not tensors or not self.free[worker.id].acquire(block=False):
            return batch
        if self._pid != os.getpid():  # a new worker process (forked with the training process's state)
            self._pid, self._own, self._turn = os.getpid(), {}, 0
        layout, end = [], 0
        for t in tensors:
            size = t.numel() * t.element_size()
            layout.append((end, size, t.dtype, tuple(t.shape)))
            end += -(-size // _ALIGN) * _ALIGN
        slot = self._turn
        self._turn = (slot + 1) % self.slots
        buffer = self._own.get(slot)
        grown = buffer is None or buffer.numel() < end
        if grown:  # a quarter more than needed, so that slightly larger batches (more sub-images) still fit
            buffer = self._own[slot] = torch.empty(end + end // 4, dtype=torch.uint8).share_memory_()
        for (offset, size, dtype, shape), t in zip(layout, tensors, strict=True):
            buffer[offset:offset + size].view(dtype).view(shape).copy_(t)
        return _InSlot(self.id, worker.id, slot, buffer if grown else None, layout, structure)


class _InSlot:
    """A batch in a slot: pickled as where its tensors lie, unpickled (:func:`_copy_out`) as the batch."""

    def __init__(self, ring: str, worker: int, slot: int, buffer: torch.Tensor | None, layout: list, structure: Any):
        self.args = (ring, worker, slot, buffer, layout, structure)

    def __reduce__(self) -> tuple:
        return _copy_out, self.args


def _copy_out(ring_id: str, worker: int, slot: int, buffer: torch.Tensor | None, layout: list,
              structure: Any) -> Any:
    ring = _RINGS.get(ring_id)
    if ring is None:  # the loader was closed with this batch in flight: nobody will read it
        return None
    if buffer is not None:
        ring.received[worker, slot] = buffer
    try:
        offset, size = layout[-1][:2]
        flat = ring.received[worker, slot][:offset + size].clone()
    finally:
        ring.free[worker].release()
    tensors = [flat[offset:offset + size].view(dtype).view(shape) for offset, size, dtype, shape in layout]
    return _fill(structure, iter(tensors))


class _Tensor:
    """Where a tensor stood in a batch's structure."""


def _flatten(batch: Any, tensors: list[torch.Tensor]) -> Any:
    """``batch`` with each tensor (appended to ``tensors``) replaced by a :class:`_Tensor` mark."""
    if isinstance(batch, torch.Tensor):
        tensors.append(batch)
        return _Tensor()
    if isinstance(batch, dict):
        return {k: _flatten(v, tensors) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and not hasattr(batch, "_fields"):  # a namedtuple is kept by value
        return type(batch)(_flatten(v, tensors) for v in batch)
    return batch


def _fill(structure: Any, tensors: Any) -> Any:
    if isinstance(structure, _Tensor):
        return next(tensors)
    if isinstance(structure, dict):
        return {k: _fill(v, tensors) for k, v in structure.items()}
    if isinstance(structure, list | tuple) and not hasattr(structure, "_fields"):
        return type(structure)(_fill(v, tensors) for v in structure)
    return structure
