"""Precompute keywords and perspectives into the shared cache, in shards, resumably.

``rsitr-bench prepare`` runs the same :class:`~rsitr_bench.guidance.service.GuidanceService` a method uses,
with the same roles and leakage guard, so what it stores is exactly what a later run reads. Resuming needs
no bookkeeping: every finished image is a complete, atomically written cache entry, so a rerun after an
interruption finds those entries and computes only the rest. Shards partition each split's images by index
(image ``j`` belongs to shard ``j mod n``), so ``--shard 0/4`` … ``--shard 3/4`` on four processes or
machines sharing a cache directory cover every image exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rsitr_bench.api import GuidanceResult
from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.data.model import Split
from rsitr_bench.errors import UserError
from rsitr_bench.guidance.service import GuidanceService


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the images whose index is ``index`` modulo ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"Invalid shard {self.index}/{self.count}: use I/N with 0 <= I < N, e.g. 0/4.")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` → ``Shard(i, n)``."""
        index, _, count = text.partition("/")
        try:
            index_value, count_value = int(index), int(count)
        except ValueError:
            raise UserError(f"Invalid shard {text!r}: use I/N with 0 <= I < N, e.g. --shard 0/4.") from None
        return cls(index_value, count_value)

    def indices(self, n_images: int) -> list[int]:
        return list(range(self.index, n_images, self.count))


@dataclass
class PreparePlan:
    """What to precompute: the query-side (train) and gallery-side (val/test) providers and the generator.

    The compliant default reads training captions with ``rules`` and gives gallery items ``vocabulary``
    keywords, which never read their captions.
    """

    generator: str = "dense-clip"  # mps-clip's default, so `prepare` fills what its runs read
    query_keywords: str = "rules"
    gallery_keywords: str = "vocabulary"
    generator_options: dict = field(default_factory=dict)
    query_keyword_options: dict = field(default_factory=dict)
    gallery_keyword_options: dict = field(default_factory=dict)
    max_per_image: int = 4

    def keywords_for(self, role: str) -> tuple[str, dict]:
        """The provider (and its options) for the split of ``role``."""
        if role == "train":
            return self.query_keywords, self.query_keyword_options
        return self.gallery_keywords, self.gallery_keyword_options


def prepare(service: GuidanceService, roles: list[str], plan: PreparePlan, backbone: Callable[[], Backbone],
            shard: Shard = Shard()) -> dict[str, GuidanceResult]:
    """Fill the cache for this shard of each split in ``roles`` (keys of ``service.roles``)."""
    results = {}
    for role in roles:
        if role not in service.roles:
            raise UserError(f"This dataset has no {role} split; available: {', '.join(service.roles)}.")
        split: Split = service.roles[role]
        provider, options = plan.keywords_for(role)
        results[role] = service.perspectives(
            split, keywords=provider, generator=plan.generator, backbone=backbone, keyword_options=options,
            generator_options=plan.generator_options, max_per_image=plan.max_per_image,
            indices=shard.indices(split.n_images), with_masks=False)
    return results
