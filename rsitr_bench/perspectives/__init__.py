"""Built-in perspective generators: ``samgeo`` (keyword-guided SAM), ``sam-auto`` (automatic SAM masks
ranked by keyword), ``clip-saliency`` (patch-text similarity, no SAM), ``dense-clip`` (the same from
sliding windows, at the image's resolution), ``grid`` (keyword-free crops),
``precomputed`` (MPS-CLIP's published sub-images from disk; leaky, stamped ``fail (as published)``) and
``oracle-boxes`` (ground-truth boxes, an upper bound; not deployable, stamped non-compliant).

This module is the ``perspectives`` entry point of rsitr-bench's own distribution. segment-geospatial and
transformers are imported only when a generator that needs them runs.
"""

from __future__ import annotations

from rsitr_bench.api import PerspectiveGeneratorSpec
from rsitr_bench.hookspecs import hookimpl


@hookimpl
def rsitr_register_perspective_generators() -> list[PerspectiveGeneratorSpec]:
    from rsitr_bench.perspectives.dense_clip import SPEC as dense_clip
    from rsitr_bench.perspectives.grid import SPEC as grid
    from rsitr_bench.perspectives.oracle import SPEC as oracle_boxes
    from rsitr_bench.perspectives.precomputed import SPEC as precomputed
    from rsitr_bench.perspectives.saliency import SPEC as clip_saliency
    from rsitr_bench.perspectives.sam_auto import SPEC as sam_auto
    from rsitr_bench.perspectives.sam_guided import SPEC as samgeo

    return [samgeo, sam_auto, clip_saliency, dense_clip, grid, precomputed, oracle_boxes]
