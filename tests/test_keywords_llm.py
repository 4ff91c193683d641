"""The ``llm`` keyword provider: prompt, robust parsing, fallback, determinism, and the offline model path.

A tiny Qwen2 with random weights and an in-memory BPE tokenizer is built offline. It generates random text,
so these tests check the generation path, the parsing and the fallback, never the quality of keywords.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsitr_bench.api import GuidanceEnv
from rsitr_bench.errors import CheckpointError
from rsitr_bench.keywords.llm import LLMOptions, LLMProvider, parse_keyword_list, render_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("answer, expected", [
    ('["tennis court", "tree"]', ["tennis court", "tree"]),
    ('```json\n["storage tank", "road"]\n```', ["storage tank", "road"]),
    ("```\n['plane', 'runway']\n```\nThese are the nouns.", ["plane", "runway"]),
    ("Sure! The nouns are ['ship', 'harbor'] [as requested].", ["ship", "harbor"]),
    ('{"nouns": ["bridge", "river"]}', ["bridge", "river"]),
    ('[["a"], "pond"]', ["pond"]),
    ("[]", []),
    ('["a]b", "c"]', ["a]b", "c"]),
])
def test_parse_accepts_lists_in_fences_prose_and_single_quotes(answer, expected):
    assert parse_keyword_list(answer) == expected


@pytest.mark.parametrize("answer", ["", "tennis court, tree", "[1, 2]", "{'nouns': 'tree'}", '["unterminated',
                                    "```json\n{}\n```", "None"])
def test_parse_returns_none_when_there_is_no_list_of_strings(answer):
    assert parse_keyword_list(answer) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises(text):
    result = parse_keyword_list(text)
    assert result is None or all(isinstance(k, str) for k in result)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghij '-", min_size=1, max_size=12), max_size=6),
       st.text(alphabet="abc .:!\n", max_size=20), st.text(alphabet="abc .:!\n", max_size=20))
def test_parse_recovers_any_json_list_embedded_in_prose(words, before, after):
    assert parse_keyword_list(before + json.dumps(words) + after) == words


def build_tiny_qwen(directory: Path, chat_template: bool = True) -> Path:
    """A 2-layer Qwen2 with random weights and a byte-level BPE tokenizer trained in memory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    texts = ["a storage tank and two tennis courts", '["road", "tree"]', "Caption: a JSON array"] * 20
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return build_tiny_qwen(tmp_path_factory.mktemp("qwen"))


def _env(tmp_path: Path) -> GuidanceEnv:
    def no_backbone():
        raise AssertionError("the llm provider must not need the backbone")

    return GuidanceEnv(backbone=no_backbone, train_captions=[], cache_dir=tmp_path, device="cpu",
                       log=logging.getLogger("test.llm"), counters=Counter())


def test_prompt_uses_the_chat_template_when_there_is_one(tiny_qwen):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen, local_files_only=True)
    prompt = render_prompt(tokenizer, 'Two "tennis courts"\n near a road.')
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "Caption: \"Two 'tennis courts' near a road.\"" in prompt
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, "a road").endswith("Answer: ")


def test_tiny_model_generates_greedily_and_deterministically(tiny_qwen, tmp_path):
    env = _env(tmp_path)
    provider = LLMProvider(LLMOptions(model=str(tiny_qwen), max_new_tokens=12, batch_size=2), env)
    captions = ["Two tennis courts next to a storage tank.", "A ship in the harbor.", "Three trees."]
    first = [a for start in range(0, 3, 2) for a in provider.generate(captions[start:start + 2])]
    second = [a for start in range(0, 3, 2) for a in provider.generate(captions[start:start + 2])]
    assert first == second and len(first) == 3 and all(isinstance(a, str) for a in first)
    keywords = provider.caption_keywords(captions)
    assert env.counters["llm_generated_captions"] == 9
    assert env.counters["llm_unparsable"] == sum(parse_keyword_list(a) is None for a in first)
    assert keywords == [provider._keywords(c, a) for c, a in zip(captions, first)]


def test_answers_are_parsed_checked_against_the_caption_and_cached(tiny_qwen, tmp_path, monkeypatch):
    answers = {
        "Two tennis courts next to a storage tank.":
            '```json\n["Tennis Courts", "storage tank", "area"]\n```',
        "A ship in the harbor.": "['ship', 'harbor', 'airport']",
        "Three planes on the runway.": "I cannot help with that.",
    }
    calls: list[list[str]] = []

    def fake_generate(self, captions):
        calls.append(list(captions))
        return [answers[c] for c in captions]

    monkeypatch.setattr(LLMProvider, "generate", fake_generate)
    env = _env(tmp_path)
    provider = LLMProvider(LLMOptions(model=str(tiny_qwen)), env)
    keywords = provider.caption_keywords(list(answers))
    assert keywords == [["tennis court", "storage tank"], ["ship", "harbor"], ["plane", "runway"]]
    assert env.counters["llm_unparsable"] == 1  # the refusal fell back to the rules extraction
    assert env.counters["llm_unsupported_keywords"] == 1  # "airport" is not in its caption
    assert provider.caption_keywords(list(answers)) == keywords and len(calls) == 1  # cached per caption
    other = LLMProvider(LLMOptions(model=str(tiny_qwen), require_in_caption=False), _env(tmp_path))
    assert other.caption_keywords(["A ship in the harbor."]) == [["ship", "harbor", "airport"]]


def test_missing_model_error_names_the_folder_and_the_option(tmp_path):
    with pytest.raises(CheckpointError) as err:
        LLMProvider(LLMOptions(model="rsitr-bench-tests/no-such-model"), _env(tmp_path))
    message = str(err.value)
    assert "models--rsitr-bench-tests--no-such-model" in message and "keywords.model" in message
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        LLMProvider(LLMOptions(model=str(tmp_path / "not-a-model")), _env(tmp_path))


def test_llm_provider_through_the_service(make_service, corpus, backbone_fn, tiny_qwen, monkeypatch):
    monkeypatch.setattr(LLMProvider, "generate", lambda self, captions: ["not a list"] * len(captions))
    result = make_service().perspectives(corpus["train"], keywords="llm", generator="grid",
                                         backbone=backbone_fn, keyword_options={"model": str(tiny_qwen)},
                                         indices=[0, 1])
    rules = make_service().perspectives(corpus["train"], keywords="rules", generator="grid",
                                        backbone=backbone_fn, indices=[0, 1])
    assert result.keywords == rules.keywords
    assert result.stats["llm_unparsable"] == sum(len(corpus["train"].captions_of(i)) for i in (0, 1))
