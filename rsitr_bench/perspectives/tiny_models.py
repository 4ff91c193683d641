"""Random-weight stand-ins for the heavy models, built offline: a GroundingDINO for tests and benchmarks.

They run the real code paths and call patterns (one detector call per image, offsets-based keyword scoring)
but localise nothing: with random weights the boxes are arbitrary. ``rsitr-tiny-sam`` is its SAM counterpart
(:mod:`rsitr_bench.perspectives.sam_models`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rsitr_bench.guidance.lexicon import OBJECT_NOUNS, SCENE_NOUNS

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_tiny_grounding_dino(directory: Path, seed: int = 0, image_side: int = 128) -> Path:
    """Save a ~0.5 M-parameter GroundingDINO and its processor to ``directory`` (a local model folder)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.utils import logging as hf_logging

    words = sorted({w for noun in (*OBJECT_NOUNS, *SCENE_NOUNS) for w in noun.split()}
                   | {".", ",", "a", "the"})
    vocab = {token: i for i, token in enumerate((*_SPECIAL, *words, "##s", "##es"))}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = BertTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=224, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], window_size=7,
                                   out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_feature_levels=4,
        max_text_len=64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config).eval()
    images = GroundingDinoImageProcessor(size={"shortest_edge": image_side, "longest_edge": image_side})
    processor = GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)
    directory = Path(directory)
    hf_logging.disable_progress_bar()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
