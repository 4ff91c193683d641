"""Per-query sample logs (``--log-samples``, lm-eval's ``--log_samples``): what each query retrieved.

A metric says how often a method is right; the samples say *where* it is wrong. For one seed of one run,
``seeds/<seed>/samples.jsonl`` holds one JSON object per query, image queries (``i2t``) first, then text
queries (``t2i``), with the top-``k`` retrieved items, their scores, whether each is a positive, and the
0-based rank of the first positive under the run's tie policy (the metric's rank minus one, so
``first_positive_rank < k`` is exactly an R@k hit). The format is documented in docs/metrics.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from rsitr_bench import metrics as M
from rsitr_bench.data.model import Split
from rsitr_bench.harness.atomic import write_atomic

SAMPLES_FILE = "samples.jsonl"
TOP_K = 10


def _rank(value: float) -> int | float:
    """A 0-based rank: an integer, except under ``ties="expected"`` where it may be fractional."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def sample_records(split: Split, similarity: Any, result: M.RetrievalResult, captions: Sequence[str],
                   k: int = TOP_K) -> Iterator[dict[str, Any]]:
    """One record per query of ``result`` (``captions``: the texts the metrics saw, for ``string-dedup``)."""
    top = M.top_k(similarity, split.caption_image, k, result.protocol, captions)
    for i, name in enumerate(split.image_names):
        yield {"direction": "i2t", "query": {"image": name, "index": i},
               "first_positive_rank": _rank(result.i2t_ranks[i] - 1),
               "top": [{"caption": int(j), "text": split.captions[j], "score": float(s), "positive": bool(p)}
                       for j, s, p in zip(top.i2t_caption[i], top.i2t_score[i], top.i2t_positive[i], strict=True)]}
    for q, j in enumerate(top.t2i_query_caption):
        yield {"direction": "t2i", "query": {"caption": int(j), "text": split.captions[j]},
               "first_positive_rank": _rank(result.t2i_ranks[q] - 1),
               "top": [{"image": split.image_names[i], "index": int(i), "score": float(s), "positive": bool(p)}
                       for i, s, p in zip(top.t2i_image[q], top.t2i_score[q], top.t2i_positive[q], strict=True)]}


def write_samples(path: Path, split: Split, similarity: Any, result: M.RetrievalResult,
                  captions: Sequence[str], k: int = TOP_K) -> Path:
    """Write :func:`sample_records` to ``path`` as JSON lines, atomically; returns ``path``."""
    def write(fh: IO[bytes]) -> None:
        for record in sample_records(split, similarity, result, captions, k):
            fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    write_atomic(path, write)
    return path
