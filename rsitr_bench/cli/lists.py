"""``rsitr-bench list pretrained`` and ``list models``: the weights names and architectures a run accepts.

Kept apart from cli.py because these listings need no plugin host (they read the checkpoint catalog and the
installed open_clip), and because importing open_clip is slow enough that only these targets should pay it.
"""

from __future__ import annotations

from dataclasses import astuple

from rsitr_bench.cli.tables import tabulate

#: The ``list`` targets this module answers, beside the plugin kinds cli.py lists itself.
LIST_TARGETS = ("pretrained", "models")

_HEADERS = {
    "pretrained": ["name", "architecture", "source", "verified", "size", "licence", "for"],
    "models": ["model", "open_clip tags", "catalog checkpoints"],
}


def list_target_table(what: str) -> str:
    """The table for ``rsitr-bench list WHAT`` (``pretrained`` or ``models``)."""
    from rsitr_bench.checkpoints.listing import model_rows, pretrained_rows

    rows = pretrained_rows() if what == "pretrained" else model_rows()
    return tabulate([astuple(row) for row in rows], headers=_HEADERS[what])


def print_list_target(what: str) -> int:
    """Print the table for ``what`` with a pointer to how names are used; the exit code of the command."""
    print(list_target_table(what))
    if what == "pretrained":
        print("\nUse a catalog name (NAME or NAME@VERSION) as --set method.checkpoint=NAME; an open_clip pair "
              "MODEL/TAG as --set method.model=MODEL --set method.pretrained=TAG.")
    return 0
