"""Built-in method plugins (the ``methods`` entry point of rsitr-bench's own distribution)."""

from __future__ import annotations

from rsitr_bench.api import MethodSpec
from rsitr_bench.hookspecs import hookimpl


@hookimpl
def rsitr_register_methods() -> list[MethodSpec]:
    from rsitr_bench.methods.full_ft import SPEC as full_ft
    from rsitr_bench.methods.global_clip import SPEC as global_clip
    from rsitr_bench.methods.mps_clip.presets import SPECS as mps_clip

    return [global_clip, full_ft, *mps_clip]
