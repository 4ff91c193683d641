"""The ``rsitr-bench`` command line, one module per command family; ``main`` is the entry point."""

from rsitr_bench.cli.main import main

__all__ = ["main"]
