"""Built-in dataset plugins.

This module is the ``datasets`` entry point of rsitr-bench's own distribution: the harness finds it exactly
the way it finds third-party plugins.
"""

from __future__ import annotations

from rsitr_bench.api import DatasetSpec
from rsitr_bench.hookspecs import hookimpl


@hookimpl
def rsitr_register_datasets() -> list[DatasetSpec]:
    from rsitr_bench.datasets.real import SPECS as real
    from rsitr_bench.datasets.synthetic import SPEC as synthetic
    from rsitr_bench.datasets.synthetic_fine import SPEC as synthetic_fine

    return [synthetic, synthetic_fine, *real]
