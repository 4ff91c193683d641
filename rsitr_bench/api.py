"""What plugins implement and what the harness hands them.

Plugins return *specs* from the registration hooks (see :mod:`rsitr_bench.hookspecs`). A spec names the
plugin, gives a factory and, optionally, a dataclass of declared options with their defaults. The harness
validates user configuration against that dataclass, so every plugin gets typed, checked options and
unknown keys are reported with the list of valid ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rsitr_bench.data.model import Split
from rsitr_bench.data.text import normalize_text


@dataclass(frozen=True)
class PluginSpec:
    """Common fields of every registration.

    Attributes:
        name: the name users type (``--method NAME``); unique within its kind.
        factory: builds the plugin object; its signature depends on the kind (see the subclasses).
        options: a dataclass type whose fields are the plugin's options and defaults, or None.
        description: one line for ``rsitr-bench list``.
    """

    name: str
    factory: Callable[..., Any]
    options: type | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    """A dataset. ``factory(root: Path | None, options) -> Dataset``.

    Attributes:
        uses_data_root: False for a dataset that never reads ``root`` (e.g. one generated in memory or
            fetched by name): the runner then warns that ``--data-root`` is ignored instead of silently
            scoring other data than the user pointed at.
    """

    uses_data_root: bool = True


@dataclass(frozen=True)
class MethodSpec(PluginSpec):
    """A retrieval method. ``factory(options) -> Method``, or ``factory(options, train_options)`` when
    ``train_options`` is declared.

    Attributes:
        train_options: a dataclass of training options (the ``train`` config section); None for zero-shot
            methods, whose ``fit`` trains nothing.
        search_space: Optuna search space for sweeps, ``{option: spec}``; declared by the method.
    """

    train_options: type | None = None
    search_space: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KeywordProviderSpec(PluginSpec):
    """A keyword provider. ``factory(options, env: GuidanceEnv) -> KeywordProvider``."""


@dataclass(frozen=True)
class PerspectiveGeneratorSpec(PluginSpec):
    """A perspective generator. ``factory(options, env: GuidanceEnv) -> PerspectiveGenerator``."""


@runtime_checkable
class Dataset(Protocol):
    """A dataset found under a data root: it knows its splits and reads them on demand."""

    def available_splits(self) -> list[str]:
        """Split names whose annotation files are present."""

    def default_splits(self) -> dict[str, str]:
        """The split used for each role: ``{"train": ..., "val": ..., "test": ...}``.

        Each dataset declares the convention the field uses for it (e.g. RSITR papers train on the
        official train+val); the run configuration can override every role.
        """

    def load_split(self, name: str) -> Split:
        """Read one split; raise :class:`rsitr_bench.errors.DataError` naming the missing file if absent."""


@dataclass
class RunContext:
    """What the harness gives a method for one seed of one run.

    Attributes:
        run_dir: this seed's working directory (checkpoints go here; it survives an interruption).
        cache_dir: the shared content-addressed cache (features, keywords, perspectives).
        seed: the seed of this repetition.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``mps``.
        normalization: the declared caption normalisation.
        prompt_prefix: the declared prompt prefix (e.g. ``"a satellite image. "``).
        log: the run's logger; messages land in the run's ``run.log``.
        progress: whether to draw progress bars.
        evaluate: ``evaluate(split) -> metrics`` scores a *validation* split with the method's current
            state; trainable methods call it for model selection.
        guidance: the run's :class:`rsitr_bench.guidance_service.GuidanceService`: keywords and perspectives
            for a split, computed behind the leakage guard.
    """

    run_dir: Path
    cache_dir: Path
    seed: int
    device: str
    normalization: str
    log: logging.Logger
    prompt_prefix: str = ""
    progress: bool = True
    evaluate: Callable[[Split], Mapping[str, float]] | None = None
    guidance: Any = None

    def texts(self, split: Split) -> list[str]:
        """The split's captions as the run declares them: normalised, then prefixed. Methods encode these."""
        return [self.prompt_prefix + normalize_text(c, self.normalization) for c in split.captions]


@runtime_checkable
class Method(Protocol):
    """A retrieval method.

    The harness calls ``fit`` once with the training and validation splits, then ``score`` exactly once on
    the sealed test split. A method never sees the test split during ``fit``.
    """

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> Mapping[str, Any] | None:
        """Train (or do nothing, for zero-shot methods). Select models on ``val`` only.

        Return an optional summary that is stamped into the result, e.g. ``{"selection": "val",
        "best_epoch": 3}``. A method that selected on anything but validation must say so in ``selection``.
        """

    def score(self, split: Split, ctx: RunContext) -> np.ndarray:
        """Return the ``[n_images, n_captions]`` similarity matrix (higher is more similar)."""

    def parameter_counts(self) -> dict[str, int]:
        """``{"total": ..., "trainable": ...}`` for the efficiency columns of reports."""


@runtime_checkable
class ReportsWeights(Protocol):
    """A method whose scores depend on weights loaded from somewhere (a pretrained tag, a released checkpoint).

    The runner stamps what it returns into every result, so a number can be traced to the exact file that
    produced it, by source and sha256, as model cards and leaderboards require. For a method that trains,
    these are the weights it started from; what it trained is in its seed directory's checkpoint.
    """

    def weights_provenance(self) -> dict[str, Any]:
        """``{"identity": ..., "source": ..., "sha256": ...}`` of the weights in use (empty when random)."""
