"""Keyword localisers for ``samgeo``: GroundingDINO through transformers, or samgeo's LangSAM detector.

Both run **once per image with all of the image's keywords** in one prompt (``"tennis court. storage
tank."``), where the reference code ran one detector call per (caption, noun) pair. The transformers path
scores each query box against each keyword by the detector's token probabilities over that keyword's own
tokens (found by character offsets), so a keyword is never matched by a fragment of another one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rsitr_bench.harness.hub import resolve_local_model
from rsitr_bench.perspectives.sam_models import count_calls, require_langsam

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
Located = dict[str, list[tuple[tuple[int, int, int, int], float]]]


def keyword_prompt(keywords: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The detector prompt for all keywords, and each keyword's character span in it."""
    spans, parts, pos = [], [], 0
    for keyword in keywords:
        spans.append((pos, pos + len(keyword)))
        parts.append(keyword + ".")
        pos += len(keyword) + 2
    return " ".join(parts), spans


def token_groups(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each character span, the indices of the tokens that lie inside it (special tokens excluded)."""
    return [[t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
            for start, end in spans]


def boxes_to_pixels(cxcywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised centre-size boxes to integer pixel corners, clipped to the image."""
    cx, cy, w, h = cxcywh.T
    corners = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                        (cx + w / 2) * width, (cy + h / 2) * height], axis=1)
    corners = np.round(corners).astype(int)
    corners[:, [0, 2]] = corners[:, [0, 2]].clip(0, width)
    corners[:, [1, 3]] = corners[:, [1, 3]].clip(0, height)
    return corners


def assign(scores: np.ndarray, boxes: np.ndarray, keywords: list[str], threshold: float,
           per_keyword: int) -> Located:
    """Boxes per keyword from ``scores[query, keyword]``: those above ``threshold``, best first."""
    found: Located = {}
    for k, keyword in enumerate(keywords):
        order = [q for q in np.argsort(-scores[:, k], kind="stable") if scores[q, k] >= threshold]
        kept = [(tuple(int(v) for v in boxes[q]), float(scores[q, k])) for q in order
                if boxes[q][2] > boxes[q][0] and boxes[q][3] > boxes[q][1]][:per_keyword]
        if kept:
            found[keyword] = kept
    return found


class GroundingDinoLocalizer:
    """``transformers`` GroundingDINO, loaded from a local directory or the Hugging Face cache only."""

    def __init__(self, model: str, cache_dir: Path, device: str, box_threshold: float, counters: Counter):
        self.path, self.version = resolve_local_model(
            model, cache_dir, "GroundingDINO detector", "perspectives.detector",
            "or use localizer 'clip-saliency'")
        self.device, self.box_threshold, self.counters = device, box_threshold, counters
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(self.path, local_files_only=True)
            self._model = model.to(self.device).eval()
            count_calls(self._model, self.counters, "detector_calls")
        return self._model, self._processor

    def localize(self, image: Image.Image, keywords: list[str], per_keyword: int = 1) -> Located:
        model, processor = self._load()
        prompt, spans = keyword_prompt(keywords)
        batch = processor(images=image, text=prompt, return_tensors="pt").to(self.device)
        offsets = processor.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) != batch["input_ids"].shape[1]:
            raise RuntimeError("GroundingDINO processor and tokenizer disagree on the prompt's tokens")
        with torch.inference_mode():
            out = model(**batch)
        probs = out.logits[0].sigmoid().float().cpu().numpy()
        groups = token_groups(offsets, spans)
        scores = np.stack([probs[:, g].max(axis=1) if g else np.zeros(len(probs)) for g in groups], axis=1)
        boxes = boxes_to_pixels(out.pred_boxes[0].float().cpu().numpy(), *image.size)
        return assign(scores, boxes, keywords, self.box_threshold, per_keyword)


def match_phrase(phrase: str, keywords: list[str]) -> str | None:
    """The keyword sharing most words with a detector phrase (first on ties), or None."""
    words = set(phrase.lower().split())
    best = max(keywords, key=lambda k: len(words & set(k.split())), default=None)
    return best if best is not None and words & set(best.split()) else None


class LangSamLocalizer:
    """samgeo's LangSAM GroundingDINO (``groundingdino`` package); used only when that package is importable.

    Its SAM is not used (``samgeo`` refines the boxes with its own SAM, from one image embedding).
    """

    def __init__(self, sam_type: str, checkpoint: Path, box_threshold: float, text_threshold: float,
                 counters: Counter):
        require_langsam()
        from samgeo.text_sam import LangSAM  # safe: groundingdino is importable, so no pip install runs

        self.model = LangSAM(model_type=sam_type, checkpoint=str(checkpoint))
        self.version = "langsam:groundingdino_swinb_cogcoor"
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        count_calls(self.model.groundingdino, counters, "detector_calls")

    def localize(self, image: Image.Image, keywords: list[str], per_keyword: int = 1) -> Located:
        prompt, _ = keyword_prompt(keywords)
        boxes, logits, phrases = self.model.predict_dino(image, prompt, self.box_threshold,
                                                         self.text_threshold)
        scores = np.zeros((len(phrases), len(keywords)))
        for q, phrase in enumerate(phrases):
            keyword = match_phrase(phrase, keywords)
            if keyword is not None:
                scores[q, keywords.index(keyword)] = float(logits[q])
        pixels = np.round(boxes.cpu().numpy()).astype(int).reshape(-1, 4)
        return assign(scores, pixels, keywords, self.box_threshold, per_keyword)
