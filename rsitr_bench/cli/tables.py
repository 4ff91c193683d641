"""``tabulate``, imported on first use.

Every command prints a table, but building the parser must not pay for the import (``rsitr-bench --help``
answers without loading anything a command needs).
"""

from __future__ import annotations

from typing import Any


def tabulate(*args: Any, **kwargs: Any) -> str:
    """:func:`tabulate.tabulate` with the same arguments."""
    from tabulate import tabulate as render

    return render(*args, **kwargs)
