"""Known checkpoints by name (``catalog.yaml``): lookup, routing of ``method.checkpoint`` values, fetching.

Listing rows for ``rsitr-bench list pretrained`` live in :mod:`rsitr_bench.checkpoints.listing`, which is not
imported here: it needs open_clip and the backbone module, and the backbone module imports this package.
"""

from rsitr_bench.checkpoints.catalog import (
    CATALOG_PATH,
    Architecture,
    CatalogEntry,
    CatalogError,
    CheckpointVersionError,
    EvaluationPreset,
    PublishedResult,
    SourceRef,
    UnknownCheckpointError,
    get_entry,
    is_catalog_name,
    load_catalog,
    parse_source,
    resolve_backbone,
    resolve_checkpoint,
)

__all__ = [
    "CATALOG_PATH",
    "Architecture",
    "CatalogEntry",
    "CatalogError",
    "CheckpointVersionError",
    "EvaluationPreset",
    "PublishedResult",
    "SourceRef",
    "UnknownCheckpointError",
    "get_entry",
    "is_catalog_name",
    "load_catalog",
    "parse_source",
    "resolve_backbone",
    "resolve_checkpoint",
]
