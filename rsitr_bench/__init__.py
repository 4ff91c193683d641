"""rsitr-bench: a plugin-based benchmark harness for remote-sensing image-text retrieval."""

from rsitr_bench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
