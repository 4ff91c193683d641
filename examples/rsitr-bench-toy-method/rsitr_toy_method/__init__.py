"""An example out-of-tree rsitr-bench plugin that registers one method, ``toy-random``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsitr_bench import hookimpl
from rsitr_bench.api import FitSummary, MethodSpec, RunContext, Split


@dataclass
class ToyOptions:
    """``scale`` only exists to show how a plugin declares options (``--set method.scale=2``)."""

    scale: float = 1.0


class ToyRandom:
    """Chance-level retrieval: random scores, reproducible from the run's seed."""

    def __init__(self, options: ToyOptions, train_options: None):
        self.options = options

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> FitSummary | None:
        return None  # zero-shot: nothing to select, the result says "none (zero-shot)"

    def score(self, split: Split, ctx: RunContext) -> np.ndarray:
        rng = np.random.default_rng(ctx.seed)
        return self.options.scale * rng.standard_normal((split.n_images, split.n_captions))

    def parameter_counts(self) -> dict[str, int]:
        return {"total": 0, "trainable": 0}


@hookimpl
def rsitr_register_methods() -> list[MethodSpec]:
    return [MethodSpec(name="toy-random", factory=ToyRandom, options=ToyOptions,
                       description="Chance-level random scores (example plugin)")]
