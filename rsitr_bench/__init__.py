"""rsitr-bench: a plugin-based benchmark harness for remote-sensing image-text retrieval.

``rsitr_bench.run`` and ``rsitr_bench.evaluate`` are the Python API (see :mod:`rsitr_bench.harness.library`);
they are imported on first use, so ``import rsitr_bench`` in a plugin stays as cheap as the hook marker it needs.
"""

from typing import Any

from rsitr_bench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__", "run", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in ("run", "evaluate"):
        from rsitr_bench.harness import library

        return getattr(library, name)
    raise AttributeError(f"module 'rsitr_bench' has no attribute {name!r}")
