"""The retrieval data model: splits of images and captions, text normalisation and fingerprints."""

from rsitr_bench.data.fingerprint import split_fingerprint
from rsitr_bench.data.model import Split
from rsitr_bench.data.text import NORMALIZATIONS, normalize_text

__all__ = ["Split", "split_fingerprint", "normalize_text", "NORMALIZATIONS"]
