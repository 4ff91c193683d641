"""The hook specifications every rsitr-bench plugin implements.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`. It is found through the
``rsitr_bench`` entry-point group, exactly like the built-in plugins, which are registered the same way.

Example, in a third-party package::

    from rsitr_bench import hookimpl
    from rsitr_bench.api import MethodSpec

    @hookimpl
    def rsitr_register_methods():
        return [MethodSpec(name="my-method", factory=MyMethod, options=MyOptions)]

and in its ``pyproject.toml``::

    [project.entry-points.rsitr_bench]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rsitr_bench.api import DatasetSpec, KeywordProviderSpec, MethodSpec, PerspectiveGeneratorSpec

PROJECT = "rsitr_bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rsitr_register_datasets() -> Sequence[DatasetSpec]:
    """Declare datasets.

    Return: a list of :class:`rsitr_bench.api.DatasetSpec`, one per dataset name.

    Called once, when the plugin manager is built, to fill the dataset table that ``--dataset NAME`` and
    ``rsitr-bench list datasets`` read.
    """


@hookspec
def rsitr_register_keyword_providers() -> Sequence[KeywordProviderSpec]:
    """Declare keyword providers (which words name the objects a perspective should show).

    Return: a list of :class:`rsitr_bench.api.KeywordProviderSpec`.

    Called once, when the plugin manager is built. Providers only ever receive the typed item context the
    harness builds, so gallery items of val and test never expose their captions.
    """


@hookspec
def rsitr_register_perspective_generators() -> Sequence[PerspectiveGeneratorSpec]:
    """Declare perspective generators (which sub-images of an image a method sees besides the whole).

    Return: a list of :class:`rsitr_bench.api.PerspectiveGeneratorSpec`.

    Called once, when the plugin manager is built.
    """


@hookspec
def rsitr_register_methods() -> Sequence[MethodSpec]:
    """Declare retrieval methods.

    Return: a list of :class:`rsitr_bench.api.MethodSpec`. Each spec names the method, its options
    dataclass (its declared defaults) and, for sweeps, its Optuna search space.

    Called once, when the plugin manager is built.
    """


@hookspec
def rsitr_run_finished(run: dict[str, Any]) -> None:
    """Notification: a run has finished and its record is safely in the registry.

    Arguments:
        run: the run's registry record: ``id``, ``dir``, ``method``, ``dataset``, ``status`` and the
            aggregated ``metrics`` (the content of its ``metrics.json``).

    Called once per finished run, after every file is written. Trackers and reporters implement it; an
    exception raised here is logged and does not fail the run.
    """
