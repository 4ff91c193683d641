"""Retrieval metrics with declared protocol and tie policy, a streaming path and statistics.

See ``docs/metrics.md`` for the definitions, a worked example and the float16/bfloat16 findings.
"""

from rsitr_bench.metrics.kernel import RetrievalResult, retrieval_metrics
from rsitr_bench.metrics.stats import aggregate_seeds, bootstrap_ci, paired_test, significance_tied
from rsitr_bench.metrics.streaming import streaming_retrieval_metrics
from rsitr_bench.metrics.topk import TopK, top_k
from rsitr_bench.metrics.validate import PROTOCOLS, TIE_POLICIES, MetricInputError

__all__ = [
    "PROTOCOLS",
    "TIE_POLICIES",
    "TopK",
    "MetricInputError",
    "RetrievalResult",
    "aggregate_seeds",
    "bootstrap_ci",
    "paired_test",
    "retrieval_metrics",
    "significance_tied",
    "streaming_retrieval_metrics",
    "top_k",
]
