"""``rules``: offline keyword extraction from captions with the remote-sensing lexicon (the default).

No model and no download: captions are matched against :mod:`rsitr_bench.guidance.lexicon`, longest name
first ("tennis court" before "court"), plurals folded ("storage tanks" → "storage tank"), stop nouns dropped.
It is also the fallback of the ``llm`` provider and the source of the ``vocabulary`` provider's word list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rsitr_bench.api import KeywordProviderSpec
from rsitr_bench.guidance.lexicon import OBJECT_NOUNS, SCENE_NOUNS, STOP_NOUNS, Lexicon, normalize_keyword
from rsitr_bench.harness.store import digest
from rsitr_bench.keywords.base import CaptionKeywordProvider

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

#: Bump when the extraction logic changes, so cached keywords of older versions are not reused.
VERSION = 1


@dataclass
class RulesOptions:
    """Options of the ``rules`` provider.

    Attributes:
        extra_nouns: nouns to add to the built-in lexicon (multi-word names allowed).
        scene_nouns: also return land-cover words ("forest", "sea"), which name the whole image.
        stop_nouns: nouns never to return, on top of the built-in stop-list.
    """

    extra_nouns: list[str] = field(default_factory=list)
    scene_nouns: bool = False
    stop_nouns: list[str] = field(default_factory=list)


def build_lexicon(options: RulesOptions) -> Lexicon:
    """The lexicon the options describe, stop nouns removed."""
    stop = STOP_NOUNS | {normalize_keyword(s) or s.strip().lower() for s in options.stop_nouns}
    nouns = [*OBJECT_NOUNS, *(SCENE_NOUNS if options.scene_nouns else ()), *options.extra_nouns]
    return Lexicon(n for n in nouns if normalize_keyword(n) not in stop)


class RulesProvider(CaptionKeywordProvider):
    """Lexicon nouns of each caption, in order of appearance, without repeats."""

    def __init__(self, options: RulesOptions, env: GuidanceEnv):
        self.lexicon = build_lexicon(options)
        super().__init__(env, digest("rules", VERSION, dataclasses.asdict(options), self.lexicon.nouns))

    def extract(self, texts: list[str]) -> list[list[str]]:
        return [list(dict.fromkeys(self.lexicon.find(t))) for t in texts]


SPEC = KeywordProviderSpec(
    name="rules",
    factory=RulesProvider,
    options=RulesOptions,
    description="Offline lexicon of remote-sensing nouns (multi-word, plurals, stop-list); default, fallback",
)
