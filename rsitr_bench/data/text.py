"""Declared caption text normalisations.

Published RSITR numbers differ partly because each code base normalises captions differently and never
says so. Here the normalisation is a named, configurable step, and its name is recorded with every run.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Characters the PIR/HarMA/MPS-CLIP `pre_caption` removes, and the ones it turns into spaces.
_PRE_CAPTION_DROP = re.compile(r"[,.'!?\"()*#:;~]")
_PRE_CAPTION_SPACE = re.compile(r"[-/]")
_WHITESPACE = re.compile(r"\s+")
PRE_CAPTION_MAX_WORDS = 30


def _none(text: str) -> str:
    return text


def _lower(text: str) -> str:
    return text.lower()


def _pre_caption(text: str) -> str:
    """The PIR lineage's `pre_caption`: lowercase, drop punctuation, collapse spaces, at most 30 words."""
    text = _PRE_CAPTION_DROP.sub("", text.lower())
    text = _PRE_CAPTION_SPACE.sub(" ", text).replace("<person>", "person")
    text = _WHITESPACE.sub(" ", text).strip()
    words = text.split(" ")
    return " ".join(words[:PRE_CAPTION_MAX_WORDS])


NORMALIZATIONS: dict[str, Callable[[str], str]] = {
    "none": _none,
    "lower": _lower,
    "pre_caption": _pre_caption,
}


def normalize_text(text: str, mode: str) -> str:
    """Apply the named normalisation (`none`, `lower` or `pre_caption`) to one caption."""
    try:
        return NORMALIZATIONS[mode](text)
    except KeyError:
        raise ValueError(f"unknown text normalisation {mode!r}; choose one of {sorted(NORMALIZATIONS)}") from None
