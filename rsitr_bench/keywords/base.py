"""Caption-based keyword providers: per-caption extraction, cached by caption text, merged per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rsitr_bench.guidance.context import ItemContext
from rsitr_bench.guidance.lexicon import rank_keywords
from rsitr_bench.harness.store import CheckedStore, digest

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv


class CaptionKeywordProvider:
    """Keywords of an image = its captions' keywords, ranked by how many captions name them.

    Subclasses implement :meth:`extract` for a batch of non-empty captions. Results are cached per
    (provider identity, caption text): a caption shared by many images, or seen again in another run, is
    extracted once. The captions are read through :meth:`ItemContext.captions`, so on a val/test gallery
    item the guard refuses them (and the service records the refusal).
    """

    def __init__(self, env: GuidanceEnv, identity: str):
        self.env = env
        self.identity = identity
        self.store = CheckedStore(env.cache_dir, "keywords", "keyword", env.counters)

    def keywords(self, item: ItemContext) -> list[str]:
        return rank_keywords(self.caption_keywords(item.captions()))

    def caption_keywords(self, texts: Sequence[str]) -> list[list[str]]:
        """Keywords per caption, in caption order; an empty caption has none (and is counted)."""
        results: list[list[str] | None] = [None] * len(texts)
        missing: list[int] = []
        for i, text in enumerate(texts):
            if not text.strip():
                self.env.counters["empty_captions"] += 1
                results[i] = []
                continue
            hit = self.store.get(self._key(text), lambda p: all(isinstance(k, str) for k in p))
            if hit is None:
                missing.append(i)
            else:
                results[i] = list(hit)
        if missing:
            for i, found in zip(missing, self.extract([texts[i] for i in missing])):
                results[i] = list(dict.fromkeys(found))
                self.store.put(self._key(texts[i]), results[i])
        return [r or [] for r in results]

    def extract(self, texts: list[str]) -> list[list[str]]:
        raise NotImplementedError

    def _key(self, text: str) -> str:
        return digest("caption-keywords", self.identity, text)
