"""Per-epoch training curves for TensorBoard: ``--set train.tensorboard=true``.

The engine writes, after every epoch, the mean training loss (``train/loss``), the learning rate of the
epoch's last step (``train/lr``) and every metric of the selecting split (``val/mR``, ``val/i2t_R@1``, …;
``test/…`` under the legacy ``select_on=test``), with the epoch number as the step, into
``seeds/<seed>/tensorboard/`` of the run. Only rank 0 writes under DDP. Look at them with
``tensorboard --logdir ~/.rsitr-bench/runs`` (the registry; or one run's folder).

The ``tensorboard`` package is optional (``pip install tensorboard``): asking for the curves without it is
a configuration error raised when the configuration is read, before any data is loaded or trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

TENSORBOARD_DIR = "tensorboard"  # under the run context's run_dir (a seed's directory)


def require_tensorboard(on: bool) -> bool:
    """``on``, once the ``tensorboard`` package is known to be importable when ``on`` is true."""
    if on:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ValueError("TensorBoard curves need the tensorboard package, which is not "
                             "installed: `pip install tensorboard` (or leave train.tensorboard off)") from None
    return on


class EpochScalars:
    """A context manager that logs one point per epoch; it writes nothing when ``folder`` is None."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._writer: Any = None

    def __enter__(self) -> EpochScalars:
        if self.folder is not None:
            from torch.utils.tensorboard import SummaryWriter  # optional, and slow to import

            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self

    def log(self, epoch: int, loss: float, lr: float, split: str | None = None,
            metrics: Mapping[str, float] | None = None) -> None:
        """Write epoch ``epoch``'s scalars and flush them, so an interrupted run keeps its finished epochs."""
        if self._writer is None:
            return
        self._writer.add_scalar("train/loss", loss, epoch)
        self._writer.add_scalar("train/lr", lr, epoch)
        for key, value in (metrics or {}).items():
            self._writer.add_scalar(f"{split}/{key}", value, epoch)
        self._writer.flush()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
