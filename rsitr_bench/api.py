"""The whole plugin contract: what plugins implement, what they declare and what the harness hands them.

There are four kinds of plugin (:data:`PLUGIN_KINDS`). A plugin module returns *specs* from the registration
hooks of :mod:`rsitr_bench.hookspecs`; a spec names the plugin, gives its factory, its options (a dataclass
whose fields and defaults the harness validates user configuration against) and its *capabilities*: every
behaviour the harness adapts to is a declared field here, never discovered at run time.

===================  ======================================  ======================================================
kind                 spec                                    factory signature -> object
===================  ======================================  ======================================================
dataset              :class:`DatasetSpec`                    ``factory(root, options) ->`` :class:`Dataset`
keyword provider     :class:`KeywordProviderSpec`            ``factory(options, env) ->`` :class:`KeywordProvider`
perspective gen.     :class:`PerspectiveGeneratorSpec`       ``factory(options, env) ->`` :class:`PerspectiveGenerator`
method               :class:`MethodSpec`                     ``factory(options, train_options) ->`` :class:`Method`
===================  ======================================  ======================================================

Keyword providers and perspective generators see images only through the guarded :class:`ItemContext`; a
method reaches them through :attr:`RunContext.guidance`. Everything a plugin author needs is importable from
this module (and :data:`rsitr_bench.hookimpl`); see ``docs/writing-plugins.md``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from rsitr_bench.data.model import ObjectBox, Split
from rsitr_bench.data.text import normalize_text
from rsitr_bench.guidance.context import (
    CaptionAccessRefused,
    GroundTruthRefused,
    ItemContext,
    ItemRole,
    Perspective,
    SplitRole,
)

if TYPE_CHECKING:
    import torch

    from rsitr_bench.clip.backbones import Backbone

__all__ = [
    "CaptionAccessRefused", "Dataset", "DatasetSpec", "FitSummary", "GroundTruthRefused", "Guidance", "GuidanceEnv",
    "GuidanceResult", "ItemContext", "ItemRole", "KeywordProvider", "KeywordProviderSpec", "Method", "MethodSpec",
    "ObjectBox", "PLUGIN_KINDS", "Perspective", "PerspectiveGenerator", "PerspectiveGeneratorSpec", "PluginKind",
    "PluginSpec", "ReportsWeights", "RunContext", "Selection", "Split", "SplitRole", "TrainOptions",
]


# ------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class PluginSpec:
    """Common fields of every registration.

    Attributes:
        name: the name users type (``--method NAME``); unique within its kind.
        factory: builds the plugin object; its one signature per kind is given by the subclass.
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


def _never_reads_gallery_captions(options: Any) -> bool:
    return False


@dataclass(frozen=True)
class MethodSpec(PluginSpec):
    """A retrieval method. ``factory(options, train_options) -> Method``; ``train_options`` is None for a
    zero-shot method (one without declared ``train_options``).

    Attributes:
        train_options: a dataclass of training options (the ``train`` config section), following
            :class:`TrainOptions`; None for zero-shot methods, whose ``fit`` trains nothing.
        search_space: Optuna search space for sweeps, ``{option: spec}``; declared by the method.
        reads_gallery_captions: ``reads_gallery_captions(options) -> bool``: True when these validated
            options reproduce a published protocol whose gallery keywords come from the val/test items' own
            captions. The leakage guard then grants those reads, and the result is stamped
            ``leakage_audit: fail (as published)`` and non-compliant. The default: never.
        defaults: values that replace declared defaults, by section: ``{"method": {...}, "train": {...}}``.
            A preset (``mps-clip-head``) is a spec with the same ``options`` and ``train_options`` and its own
            ``defaults``, so its values are checked against the same field types and ranges; the user's
            configuration still overrides them.
    """

    train_options: type | None = None
    search_space: Mapping[str, Any] = field(default_factory=dict)
    reads_gallery_captions: Callable[[Any], bool] = _never_reads_gallery_captions
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeywordProviderSpec(PluginSpec):
    """A keyword provider. ``factory(options, env: GuidanceEnv) -> KeywordProvider``.

    Attributes:
        counters: the names of the counters it adds to ``env.counters`` (e.g. ``llm_unparsable``); each
            :class:`GuidanceResult` that used it reports them, zero when nothing happened.
    """

    counters: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerspectiveGeneratorSpec(PluginSpec):
    """A perspective generator. ``factory(options, env: GuidanceEnv) -> PerspectiveGenerator``.

    Attributes:
        keyword_guided: False for a generator whose regions do not depend on keywords (``grid``): it is called
            with no keywords, and for items that got none.
        derived_from_own_captions: True for a generator whose output was made from each item's *own*
            captions (``precomputed``: the published sub-images). Its val/test gallery items are recorded as
            leaked in the audit, from the cache or not, and its cache entries are keyed by the item's name too.
        deployable: False for a generator that reads ground truth a deployed system never has (``oracle-boxes``:
            the annotated boxes of each keyword's object). Only such a generator's item contexts carry
            :meth:`ItemContext.object_boxes`, and only on a dataset that declares them; every run that used it
            is stamped non-compliant ("oracle perspectives (upper bound, not deployable)") and never ranked.
        counters: the names of the counters it adds to ``env.counters`` (e.g. ``detector_calls``); each
            :class:`GuidanceResult` that used it reports them, zero when nothing happened.
    """

    keyword_guided: bool = True
    derived_from_own_captions: bool = False
    deployable: bool = True
    counters: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginKind:
    """One kind of plugin: its registration hook, the word users read, and the spec type it returns."""

    hook: str
    human: str
    spec: type[PluginSpec]


#: Every plugin kind, by the table name used in ``rsitr-bench list KIND`` and :class:`PluginHost` lookups.
PLUGIN_KINDS: dict[str, PluginKind] = {
    "datasets": PluginKind("rsitr_register_datasets", "dataset", DatasetSpec),
    "keywords": PluginKind("rsitr_register_keyword_providers", "keyword provider", KeywordProviderSpec),
    "perspectives": PluginKind("rsitr_register_perspective_generators", "perspective generator",
                               PerspectiveGeneratorSpec),
    "methods": PluginKind("rsitr_register_methods", "method", MethodSpec),
}


# ---------------------------------------------------------------------------------------------- datasets


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

    def load_split(self, name: str, *, check_images: bool = True) -> Split:
        """Read one split; raise :class:`rsitr_bench.errors.DataError` naming the missing file if absent.

        ``check_images=False`` (``rsitr-bench data stats --allow-missing-images``) reads the annotations
        without requiring every image file; a dataset without image files on disk ignores it.
        """

    def expected_size(self, name: str) -> tuple[int, int] | None:
        """``(images, captions)`` the split is known to have (pinned by a catalog), or None if unknown.

        ``rsitr-bench data stats`` prints it next to what was read, so a truncated download shows.
        """


# --------------------------------------------------------------------------------------------- guidance


@dataclass
class GuidanceEnv:
    """What a keyword provider or perspective generator factory receives besides its options.

    Attributes:
        backbone: the method's own backbone, built on first call (memoised by the service).
        train_captions: the training split's captions, the only captions a gallery-side provider
            (``vocabulary``) may learn from; empty when the run has no training split.
        cache_dir: the shared content-addressed cache.
        device: where models run.
        log: the run's logger.
        counters: where plugins count what happened (cache hits, fallbacks, heavy model calls); the
            service reports them per call in :attr:`GuidanceResult.stats`.
    """

    backbone: Callable[[], Backbone]
    train_captions: list[str]
    cache_dir: Path
    device: str = "cpu"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rsitr_bench.guidance"))
    counters: Counter = field(default_factory=Counter)


@runtime_checkable
class KeywordProvider(Protocol):
    """Names the objects a perspective should show, for one item.

    ``item.captions()`` is refused (:class:`CaptionAccessRefused`) on the gallery side of val and test;
    the item then gets no keywords and the run is stamped ``leakage_audit: fail``.
    """

    def keywords(self, item: ItemContext) -> list[str]:
        """The keywords of one image, most important first (the service keeps the first few)."""


@runtime_checkable
class PerspectiveGenerator(Protocol):
    """Finds the regions of one image that its keywords name.

    Attributes:
        identity: a string that changes whenever the generator's output for the same image and keywords
            would change (its version, options, model weights); perspective caches key on it.
    """

    identity: str

    def generate(self, item: ItemContext, keywords: list[str]) -> list[Perspective]:
        """At most one perspective per keyword (any number for keyword-free generators); ``[]``: nothing
        found. Malformed perspectives (box outside the image, unknown keyword) are dropped and counted."""


@dataclass
class GuidanceResult:
    """Keywords and perspectives of the images of one split, in the order of ``indices``.

    Attributes:
        split, split_role, role: the split and the role the service gave it (``query`` or ``gallery``).
        indices: image indices of the split that were computed (all of them unless a subset was asked).
        keywords: per image, the keywords the perspectives were generated for (at most ``max_per_image``).
        perspectives: per image, at most one perspective per keyword; ``[]`` means nothing was found.
        stats: the counters the service reports (and any plugin-specific ones) for this call.
        config: provider and generator names and resolved options, ``max_per_image`` and
            ``keyword_guided`` (False for keyword-free generators such as ``grid``), for stamping.
    """

    split: str
    split_role: SplitRole
    role: ItemRole
    indices: list[int]
    keywords: list[list[str]]
    perspectives: list[list[Perspective]]
    stats: dict[str, int]
    config: dict[str, Any]


class Guidance(Protocol):
    """Keywords and perspectives for a split of the run, behind the leakage guard (:attr:`RunContext.guidance`).

    The service, not the method, decides the split's role (training items are queries, val/test items
    gallery items whose captions are sealed), so a method cannot ask for test captions by mistake.
    """

    def perspectives(self, split: Split, *, keywords: str, generator: str, backbone: Callable[[], Backbone],
                     keyword_options: dict | None = None, generator_options: dict | None = None,
                     max_per_image: int | None = 4, indices: Sequence[int] | None = None,
                     with_masks: bool = True) -> GuidanceResult:
        """Keywords and perspectives for every image of ``split`` (or the image ``indices`` given).

        Arguments:
            split: one of the split objects the harness handed to ``fit`` or ``score``.
            keywords, generator: registered keyword provider and perspective generator names.
            backbone: builds the method's backbone; called at most once, and only if a plugin needs it.
            keyword_options, generator_options: plugin options, validated against the plugin's declaration.
            max_per_image: keywords (and so perspectives) kept per image, in the provider's order;
                ``None`` keeps them all.
            with_masks: False drops the masks from the result (crop-mode methods need boxes only).
        """


# ---------------------------------------------------------------------------------------------- methods


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
        guidance: keywords and perspectives for the run's splits, computed behind the leakage guard.
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
    guidance: Guidance | None = None

    def texts(self, split: Split) -> list[str]:
        """The split's captions as the run declares them: normalised, then prefixed. Methods encode these."""
        return [self.prompt_prefix + normalize_text(c, self.normalization) for c in split.captions]


#: The split a method selected its model on: ``val`` (compliant), ``test`` (legacy reproduction, stamped
#: non-compliant) or ``none`` (zero-shot, evaluation only, or the last epoch without evaluation).
Selection = Literal["val", "test", "none"]

_SELECTION_LABELS: dict[str, str] = {"val": "val", "test": "test (non-compliant)", "none": "none"}


@dataclass(frozen=True)
class FitSummary:
    """What ``Method.fit`` returns; stamped into every seed's result under ``fit``.

    Attributes:
        selection: the split the model was selected on; the run's compliance is decided from this field.
        label: the human-readable text reports show (``selection`` in the result JSON); by default
            ``val``, ``test (non-compliant)`` or ``none``.
        details: anything else worth keeping with the result (``best_epoch``, training history, ...).
    """

    selection: Selection
    label: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.selection not in _SELECTION_LABELS:
            raise ValueError(f"FitSummary.selection is {self.selection!r}; expected one of "
                             f"{', '.join(_SELECTION_LABELS)}")

    def record(self) -> dict[str, Any]:
        """The JSON form: ``{"selection": label, "selected_on": selection, **details}``."""
        return {**self.details, "selection": self.label or _SELECTION_LABELS[self.selection],
                "selected_on": self.selection}


class TrainOptions(Protocol):
    """What the harness reads of a trainable method's ``train_options``; the rest is the method's own.

    Attributes:
        select_on: ``val`` (compliant) or ``test`` (legacy reproduction only): with ``test``, the runner
            hands the test split to ``fit`` as its validation split, and ``ctx.evaluate`` accepts it.
    """

    select_on: str


@runtime_checkable
class Method(Protocol):
    """A retrieval method.

    The harness calls ``fit`` once with the training and validation splits, then ``score`` exactly once on
    the sealed test split. A method never sees the test split during ``fit``.
    """

    def fit(self, train: Split | None, val: Split | None, ctx: RunContext) -> FitSummary | None:
        """Train (or do nothing, for zero-shot methods: return None). Select models on ``val`` only.

        The returned :class:`FitSummary` says which split the model was selected on; a method that
        selected on anything but validation must say so there, and the run is stamped non-compliant.
        """

    def score(self, split: Split, ctx: RunContext) -> np.ndarray | torch.Tensor:
        """Return the ``[n_images, n_captions]`` similarity matrix (higher is more similar).

        A NumPy array, or a torch tensor on the run's device: the metrics count ranks where the matrix is, so
        a GPU method need not copy a 100,000 x 500,000 matrix to the host (``rsitr_bench.clip.features.similarity``
        does this for cached embeddings).
        """

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
