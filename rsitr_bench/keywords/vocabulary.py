"""``vocabulary``: keywords for items that must not see their captions (the gallery of val and test).

The vocabulary is learnt from the *training* captions only (the ``rules`` lexicon nouns that at least
``min_count`` training captions name); each image then gets the ``top_k`` vocabulary words whose text
embedding is closest to the image embedding, with the method's own backbone. The item's captions are never
read, so the provider is leak-free by construction on any split. A run without training captions falls back
to the built-in lexicon of remote-sensing objects (counted as ``vocabulary_builtin``).

Keywords are cached per (image bytes, vocabulary, backbone identity, options).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from rsitr_bench.api import KeywordProviderSpec
from rsitr_bench.clip.encode import DEFAULT_TEMPLATE, encode_images, encode_words
from rsitr_bench.data.images import load_rgb
from rsitr_bench.guidance.context import ItemContext
from rsitr_bench.harness.store import CheckedStore, digest, image_digest
from rsitr_bench.keywords.rules import RulesOptions, build_lexicon

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

VERSION = 1


@dataclass
class VocabularyOptions:
    """Options of the ``vocabulary`` provider.

    Attributes:
        top_k: keywords per image, most similar first.
        min_count: training captions that must name a word for it to join the vocabulary.
        max_size: the most frequent words kept.
        template: the text encoded for a word (``{}`` is replaced by the word).
        min_similarity: drop words whose cosine similarity with the image is below this (None: keep top_k).
        scene_nouns: let land-cover words ("forest", "sea") into the vocabulary.
    """

    top_k: Annotated[int, Field(ge=1)] = 4
    min_count: Annotated[int, Field(ge=1)] = 2
    max_size: Annotated[int, Field(ge=1)] = 512
    template: str = DEFAULT_TEMPLATE
    min_similarity: float | None = None
    scene_nouns: bool = False

    def __post_init__(self) -> None:
        if "{}" not in self.template:
            raise ValueError(f"template {self.template!r} must contain {{}} where the word goes")


def build_vocabulary(captions: Iterable[str], options: VocabularyOptions) -> list[str]:
    """Lexicon nouns named by at least ``min_count`` captions, most frequent first (ties alphabetical)."""
    lexicon = build_lexicon(RulesOptions(scene_nouns=options.scene_nouns))
    counts: Counter = Counter()
    for caption in captions:
        counts.update(set(lexicon.find(caption)))
    kept = [w for w, n in counts.items() if n >= options.min_count]
    return sorted(kept, key=lambda w: (-counts[w], w))[:options.max_size]


class VocabularyProvider:
    """Image-to-vocabulary similarity; never reads the item's captions."""

    def __init__(self, options: VocabularyOptions, env: GuidanceEnv):
        self.options = options
        self.env = env
        self.vocabulary = build_vocabulary(env.train_captions, options)
        if not self.vocabulary:
            env.log.warning("vocabulary: no training captions name a lexicon noun %d times; using the "
                            "built-in lexicon of remote-sensing objects instead", options.min_count)
            env.counters["vocabulary_builtin"] += 1
            self.vocabulary = list(build_lexicon(RulesOptions()).nouns)[:options.max_size]
        self.store = CheckedStore(env.cache_dir, "keywords", "keyword", env.counters)
        self._identity: str | None = None
        self._text: np.ndarray | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = digest("vocabulary", VERSION, dataclasses.asdict(self.options), self.vocabulary,
                                    self.env.backbone().identity)
        return self._identity

    def keywords(self, item: ItemContext) -> list[str]:
        key = digest("image-keywords", self.identity, image_digest(item.image_path))
        hit = self.store.get(key, lambda p: all(k in self.vocabulary for k in p))
        if hit is not None:
            return list(hit)
        backbone = self.env.backbone()
        if self._text is None:
            self._text = encode_words(backbone, self.vocabulary, self.options.template).cpu().numpy()
        image = encode_images(backbone, [load_rgb(item.image_path, record=item.image_name)])[0].cpu().numpy()
        chosen = rank_vocabulary(self._text @ image, self.options.top_k, self.options.min_similarity)
        words = [self.vocabulary[i] for i in chosen]
        self.store.put(key, words)
        return words


def rank_vocabulary(similarity: np.ndarray, top_k: int, min_similarity: float | None) -> list[int]:
    """Indices of the ``top_k`` most similar words (ties: vocabulary order), above ``min_similarity``."""
    order = np.argsort(-similarity, kind="stable")[:top_k]
    return [int(i) for i in order if min_similarity is None or similarity[i] >= min_similarity]


SPEC = KeywordProviderSpec(
    name="vocabulary",
    factory=VocabularyProvider,
    options=VocabularyOptions,
    description="Training-caption vocabulary ranked by image similarity; never reads the item's captions",
)
