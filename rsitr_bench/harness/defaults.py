"""Defaults that the command line shows in its help.

Kept apart from :mod:`rsitr_bench.harness.config` so that building the parser (``rsitr-bench --help``) does not
import the configuration machinery (pydantic) just to print a default.
"""

#: The dataset a run uses when none is named: the embedded one, generated on first use, so that
#: ``rsitr-bench run --method NAME`` works on a fresh machine without any download.
DEFAULT_DATASET = "synthetic-rs"
