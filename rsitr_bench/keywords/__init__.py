"""Built-in keyword providers: ``rules`` (default, offline), ``llm`` (local language model) and
``vocabulary`` (leak-free, for val/test gallery items).

This module is the ``keywords`` entry point of rsitr-bench's own distribution: the harness finds it the way
it finds third-party plugins. Heavy dependencies (transformers) are imported only when a provider runs.
"""

from __future__ import annotations

from rsitr_bench.api import KeywordProviderSpec
from rsitr_bench.hookspecs import hookimpl


@hookimpl
def rsitr_register_keyword_providers() -> list[KeywordProviderSpec]:
    from rsitr_bench.keywords.llm import SPEC as llm
    from rsitr_bench.keywords.rules import SPEC as rules
    from rsitr_bench.keywords.vocabulary import SPEC as vocabulary

    return [rules, llm, vocabulary]
