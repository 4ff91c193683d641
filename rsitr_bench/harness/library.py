"""The Python API: run or evaluate from a notebook or script, with the same rules and records as the CLI.

Why a separate entry point: a notebook user should not have to assemble a plugin host, a registry and a typed
configuration by hand, and must not get a weaker path than the command line. Both functions build the same
configuration tree the CLI builds, resolve it against the installed plugins and record the run in the registry
(``$RSITR_BENCH_HOME/runs`` unless ``registry`` is given), so ``rsitr-bench runs ls`` and reports see it.

Example (the embedded dataset and backbone; no download)::

    >>> import rsitr_bench
    >>> outcome = rsitr_bench.evaluate("global-clip", dataset_options={"n_test": 24}, progress=False)
    >>> outcome.metrics["summary"]["mR"]["mean"] > 0
    True
    >>> outcome.metrics["evaluation_only"]
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rsitr_bench.harness.config import apply_override, load_yaml_file, resolve_config
from rsitr_bench.harness.paths import registry_dir
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.harness.registry import Registry
from rsitr_bench.harness.runner import RunOutcome, execute


def _tree(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, (str, Path)):
        return load_yaml_file(Path(config))
    return {key: dict(value) if isinstance(value, Mapping) else value for key, value in config.items()}


def run(config: Mapping[str, Any] | str | Path, registry: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None) -> RunOutcome:
    """Run a configuration (a mapping shaped like a run's ``config.yaml``, or the path of one) and record it.

    Arguments:
        config: ``{"method": {"name": ...}, "dataset": {...}, "train": {...}, "data": {...}, "eval": {...},
            "run": {...}}``; ``method: NAME`` is accepted for ``method: {name: NAME}``.
        registry: the registry directory (default ``$RSITR_BENCH_HOME/runs``).
        overrides: dotted keys applied last, as ``--set`` does, e.g. ``{"train.lr": 4e-5}``.
    """
    return _execute(_tree(config), registry, overrides, fit=True)


def evaluate(method: str, dataset: str | None = None, data_root: str | Path | None = None,
             checkpoint: str | None = None, method_options: Mapping[str, Any] | None = None,
             dataset_options: Mapping[str, Any] | None = None, seeds: list[int] | None = None,
             progress: bool = True, registry: str | Path | None = None) -> RunOutcome:
    """Score ``method`` on the test split without training (``rsitr-bench eval``) and record the run.

    ``checkpoint`` is any weights source the CLI takes: a catalog name, ``hf://`` file, URL or local path.
    """
    tree: dict[str, Any] = {"method": {"name": method, **(method_options or {})},
                            "dataset": {**({"name": dataset} if dataset else {}), **(dataset_options or {})},
                            "run": {"progress": progress, **({"seeds": list(seeds)} if seeds else {})}}
    if checkpoint is not None:
        tree["method"]["checkpoint"] = checkpoint
    if data_root is not None:
        tree["data"] = {"root": str(data_root)}
    return _execute(tree, registry, None, fit=False)


def _execute(tree: dict[str, Any], registry: str | Path | None, overrides: Mapping[str, Any] | None,
             fit: bool) -> RunOutcome:
    if isinstance(tree.get("method"), str):  # before the overrides, which may set method.* keys
        tree["method"] = {"name": tree["method"]}
    for key, value in (overrides or {}).items():
        apply_override(tree, key.split("."), value)
    host = build_plugin_host()
    return execute(resolve_config(tree, host), host, Registry(Path(registry) if registry else registry_dir()),
                   fit=fit)
