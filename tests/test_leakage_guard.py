"""The leakage guard cannot be bypassed by accident: sealed captions never leave an ItemContext by a side door."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from rsitr_bench.api import CaptionAccessRefused, ItemContext
from rsitr_bench.guidance.context import LeakageAudit

SECRET = "a secret test caption"


def _gallery_item(audit: LeakageAudit | None = None) -> ItemContext:
    return ItemContext("d", "test", "test", "gallery", 0, "img.png", Path("img.png"), sealed_captions=[SECRET],
                       audit=audit or LeakageAudit())


def test_a_test_gallery_item_refuses_its_captions_and_the_audit_fails():
    audit = LeakageAudit()
    with pytest.raises(CaptionAccessRefused, match="sealed"):
        _gallery_item(audit).captions()
    assert audit.stamp()["status"] == "fail"


def test_a_training_item_hands_out_its_captions():
    item = ItemContext("d", "train", "train", "query", 0, "img.png", Path("img.png"), sealed_captions=[SECRET])
    assert item.captions() == (SECRET,)


@pytest.mark.parametrize("read", [
    pytest.param(dataclasses.asdict, id="asdict"),
    pytest.param(dataclasses.astuple, id="astuple"),
    pytest.param(vars, id="vars"),
    pytest.param(lambda item: item.__dict__, id="__dict__"),
    pytest.param(repr, id="repr"),
    pytest.param(lambda item: [getattr(item, f.name) for f in dataclasses.fields(item)], id="fields"),
])
def test_no_introspection_reaches_the_captions(read):
    assert SECRET not in repr(read(_gallery_item()))


@pytest.mark.parametrize("copier", [
    pytest.param(pickle.dumps, id="pickle"),
    pytest.param(copy.copy, id="copy"),
    pytest.param(copy.deepcopy, id="deepcopy"),
])
def test_pickling_or_copying_a_context_is_refused(copier):
    with pytest.raises(TypeError, match="sealed"):
        copier(_gallery_item())


def test_replace_with_another_role_does_not_carry_the_captions_over():
    unsealed = dataclasses.replace(_gallery_item(), split_role="train", role="query")
    assert unsealed.captions() == ()


def test_changing_the_role_after_construction_does_not_unseal():
    item = _gallery_item()
    object.__setattr__(item, "role", "query")
    with pytest.raises(CaptionAccessRefused):
        item.captions()


def test_equal_looking_contexts_keep_their_own_audit():
    first, second = LeakageAudit(), LeakageAudit(allow_leak=True)
    _gallery_item(first)
    assert _gallery_item(second).captions() == (SECRET,)
    assert not first.leaked and not first.refused and len(second.leaked) == 1
