"""``llm``: keywords from a local instruction-tuned causal language model, deterministically.

The reference implementation sent captions to a paid chat API with default sampling, so its keywords
changed between runs, and every failure silently became ``[]``. Here a local model (default
:data:`DEFAULT_MODEL`, a 0.5 B-parameter instruct model that runs on a CPU) decodes greedily, the prompt
below is fixed and versioned, and the answer is parsed leniently (code fences, trailing prose, Python-style
single quotes). An answer that holds no list falls back to the ``rules`` extraction of that caption and is
counted as ``llm_unparsable``; with ``require_in_caption`` (the default) a keyword whose words are not in the
caption (a hallucination) is dropped and counted as ``llm_unsupported_keywords``.

The model is never downloaded during a run: a hub id is looked up in the local Hugging Face cache only,
and a local directory can be given instead.

Prompt (system, then user; rendered with the tokenizer's chat template when it has one)::

    You extract object keywords from captions of aerial and satellite images.

    Caption: "<caption>"
    List the objects and land features this caption names, as a JSON array of strings. Use lowercase
    singular nouns and keep multi-word names together ("tennis court", "storage tank"). Leave out colours,
    numbers, positions and vague words such as "area", "side" or "part". Answer with the JSON array only,
    for example: ["building", "parking lot"]
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from rsitr_bench.api import KeywordProviderSpec
from rsitr_bench.guidance.lexicon import normalize_keyword, singular, words
from rsitr_bench.harness.hub import resolve_local_model
from rsitr_bench.harness.store import digest
from rsitr_bench.keywords.base import CaptionKeywordProvider
from rsitr_bench.keywords.rules import RulesOptions, build_lexicon

if TYPE_CHECKING:
    from rsitr_bench.api import GuidanceEnv

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
#: Bump whenever the prompt or the parsing changes: cached keywords of another prompt are not reused.
PROMPT_VERSION = 1
SYSTEM_PROMPT = "You extract object keywords from captions of aerial and satellite images."
USER_PROMPT = (
    'Caption: "{caption}"\n'
    "List the objects and land features this caption names, as a JSON array of strings. Use lowercase "
    'singular nouns and keep multi-word names together ("tennis court", "storage tank"). Leave out colours, '
    'numbers, positions and vague words such as "area", "side" or "part". Answer with the JSON array only, '
    'for example: ["building", "parking lot"]'
)
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.S)
_MAX_ANSWER = 4000
_MAX_TRIES = 16  # bracket positions tried, so a pathological answer costs bounded time
_MAX_WORDS = 4


@dataclass
class LLMOptions:
    """Options of the ``llm`` provider.

    Attributes:
        model: a Hugging Face model id, read from the local cache only, or a local model directory.
        max_new_tokens: the answer's length limit (a list of a few nouns needs about 30 tokens).
        batch_size: captions generated together (left padding; results do not depend on it beyond
            floating-point noise, and it is not part of the cache key).
        require_in_caption: drop keywords whose words do not occur in the caption.
    """

    model: str = DEFAULT_MODEL
    max_new_tokens: Annotated[int, Field(ge=1)] = 48
    batch_size: Annotated[int, Field(ge=1)] = 8
    require_in_caption: bool = True


def parse_keyword_list(text: str) -> list[str] | None:
    """The first JSON (or Python-literal) list of strings in a model answer, or None if there is none.

    Accepts a list inside a code fence, followed or preceded by prose, or written with single quotes.
    Non-string elements are ignored; a non-empty list with no string at all counts as no list.
    """
    text = text[:_MAX_ANSWER]
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    starts = [i for i, ch in enumerate(body) if ch == "["][:_MAX_TRIES]
    ends = [i for i, ch in enumerate(body) if ch == "]"]
    for start in starts:
        for end in [e for e in ends if e > start][:_MAX_TRIES]:
            for load in (json.loads, ast.literal_eval):
                try:
                    value = load(body[start:end + 1])
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
                strings = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
                if isinstance(value, list) and (strings or not value):
                    return strings
    return None


def render_prompt(tokenizer: Any, caption: str) -> str:
    """The prompt for one caption, through the tokenizer's chat template when it has one."""
    caption = " ".join(caption.replace('"', "'").split())[:500]
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_PROMPT.format(caption=caption)}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{SYSTEM_PROMPT}\n\n{messages[1]['content']}\nAnswer: "


class LLMProvider(CaptionKeywordProvider):
    """Greedy-decoded keyword lists from a local causal LM, parsed and checked against the caption."""

    def __init__(self, options: LLMOptions, env: GuidanceEnv):
        self.options = options
        self.path, version = resolve_local_model(options.model, env.cache_dir, "keyword LLM",
                                                 "keywords.model", "or use the offline 'rules' provider")
        self.fallback = build_lexicon(RulesOptions())
        settings = {k: v for k, v in dataclasses.asdict(options).items() if k != "batch_size"}
        super().__init__(env, digest("llm", PROMPT_VERSION, SYSTEM_PROMPT, USER_PROMPT, version, settings,
                                     self.fallback.nouns))
        self._model: Any = None
        self._tokenizer: Any = None

    def extract(self, texts: list[str]) -> list[list[str]]:
        size = self.options.batch_size
        answers = [answer for start in range(0, len(texts), size)
                   for answer in self.generate(texts[start:start + size])]
        return [self._keywords(text, answer) for text, answer in zip(texts, answers)]

    def generate(self, captions: list[str]) -> list[str]:
        """The model's raw answers, one per caption (greedy decoding)."""
        import torch
        from transformers import GenerationConfig

        model, tokenizer = self._load()
        prompts = [render_prompt(tokenizer, c) for c in captions]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=self.options.max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        with torch.inference_mode():
            out = model.generate(**batch, generation_config=config)
        self.env.counters["llm_generated_captions"] += len(captions)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def _keywords(self, caption: str, answer: str) -> list[str]:
        parsed = parse_keyword_list(answer)
        if parsed is None:
            self.env.counters["llm_unparsable"] += 1
            return list(dict.fromkeys(self.fallback.find(caption)))
        present = set(words(caption)) | {singular(w) for w in words(caption)}
        kept = []
        for keyword in (k for k in map(normalize_keyword, parsed) if k and len(k.split()) <= _MAX_WORDS):
            if self.options.require_in_caption and not set(keyword.split()) <= present:
                self.env.counters["llm_unsupported_keywords"] += 1
                continue
            kept.append(keyword)
        return list(dict.fromkeys(kept))

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            dtype = torch.float32 if self.env.device == "cpu" else "auto"
            model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True, dtype=dtype)
            self._model, self._tokenizer = model.to(self.env.device).eval(), tokenizer
            self.env.log.info("Keyword LLM %s loaded from %s", self.options.model, self.path)
        return self._model, self._tokenizer


SPEC = KeywordProviderSpec(
    name="llm",
    factory=LLMProvider,
    options=LLMOptions,
    description=f"Local instruction-tuned LM ({DEFAULT_MODEL} by default), greedy, parsed, rules fallback",
    counters=("llm_unparsable",),
)
