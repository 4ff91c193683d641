"""The fixture writers' shared content (tests/fixtures/dataset_writers.py) carries the quirks of the real files."""

from __future__ import annotations

from tests.fixtures.dataset_writers import make_items


def test_items_carry_every_quirk():
    items = make_items({"train": 30, "test": 10})
    captions = [c for it in items for c in it.captions]
    assert len(items) == 40 and len(captions) == 200
    assert "" in captions and any(c.endswith(" ") for c in captions)
    assert sum(c == "A shared caption on two images ." for c in captions) >= 2
    assert any(len(set(it.captions)) < 5 for it in items)
    changes = sum(a.split != b.split for a, b in zip(items, items[1:]))
    assert changes > 10  # interleaved, not one block per split
