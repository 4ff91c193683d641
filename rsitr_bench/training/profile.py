"""Where a training epoch's time goes: waiting for data, forward, backward, optimiser.

The one figure that says whether the input pipeline keeps the accelerator busy is the share of the epoch
spent waiting for micro-batches (``data_wait``: the DataLoader's next batch, its copy to the device and any
work on it there). :class:`StageClock` attributes wall time to stages by laps: each ``lap(stage)`` charges
the time since the previous lap to ``stage``. On CUDA it synchronises the device first, so kernels are
charged to the stage that queued them rather than to whichever later call happens to wait for them; the
cost is that the host cannot queue one stage's kernels while the previous stage's still run (a small share
of a step for CLIP-sized models). On other devices nothing is synchronised (CPU work is synchronous).
"""

from __future__ import annotations

import time
from typing import Any

import torch

#: The stages of a training step, in the order a step passes them; ``other`` is progress bars, logging and
#: mid-epoch checkpoints.
STAGES = ("data_wait", "forward", "backward", "optimizer", "other")


class StageClock:
    """Accumulates per-stage wall time of one epoch's steps (module docstring)."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Start a new epoch: every stage at zero, the lap timer at now."""
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.steps = 0
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        if self.sync:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def data_wait_fraction(self) -> float:
        return self.seconds["data_wait"] / self.total if self.total > 0 else 0.0

    def record(self, epoch: int) -> dict[str, Any]:
        """The epoch's profile as stored with the training summary: seconds per stage, steps, data-wait share."""
        return {"epoch": epoch, "steps": self.steps, **{f"{k}_s": round(v, 4) for k, v in self.seconds.items()},
                "data_wait_fraction": round(self.data_wait_fraction(), 4)}

    def summary(self) -> str:
        """One line for ``run.log``."""
        parts = ", ".join(f"{k.replace('_', '-')} {v:.2f} s" for k, v in self.seconds.items())
        return f"{parts} over {self.steps} steps; data-wait {self.data_wait_fraction():.1%} of the epoch's steps"
