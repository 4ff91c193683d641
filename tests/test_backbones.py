"""Backbone construction and strict, safe checkpoint loading, with tiny offline configs."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from rsitr_bench.clip.backbones import build_backbone, read_state_dict, resolve_pretrained
from rsitr_bench.errors import CheckpointError, UserError


@pytest.fixture(scope="module")
def tiny():
    return build_backbone("rsitr-tiny", init_seed=0)


def test_random_init_is_deterministic(tiny):
    again = build_backbone("rsitr-tiny", init_seed=0)
    for (k, a), (_, b) in zip(tiny.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert tiny.identity == again.identity and tiny.image_size == 64
    assert build_backbone("rsitr-tiny", init_seed=1).identity != tiny.identity


def test_safetensors_roundtrip_is_strict_and_changes_identity(tiny, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    loaded = build_backbone("rsitr-tiny", checkpoint=path, init_seed=99)
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert "sha256=" in loaded.identity


def test_torch_state_dict_with_wrapper_and_module_prefix(tiny, tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.model.state_dict().items()}}, path)
    loaded = build_backbone("rsitr-tiny", checkpoint=path, init_seed=99)
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert "sha256=" in loaded.identity


def test_mismatched_keys_are_listed(tiny, tmp_path):
    state = dict(tiny.model.state_dict())
    state.pop("logit_scale")
    state["adapter.extra"] = torch.zeros(3)
    state["text_projection"] = torch.zeros(2, 2)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError) as err:
        build_backbone("rsitr-tiny", checkpoint=path)
    msg = str(err.value)
    assert "1 missing: logit_scale" in msg and "1 unexpected: adapter.extra" in msg
    assert "1 wrong shape: text_projection" in msg and str(path) in msg


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(CheckpointError, match="safely"):
        read_state_dict(path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("rsitr-tiny", checkpoint=tmp_path / "nope.safetensors")


def test_missing_pretrained_weights_fail_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError) as err:
        resolve_pretrained("ViT-B-32", "openai")
    msg = str(err.value)
    assert "huggingface.co/timm/vit_base_patch32_clip_224.openai" in msg and "method.checkpoint" in msg


def test_unknown_model_and_tag():
    with pytest.raises(UserError, match="Unknown open_clip model"):
        build_backbone("ViT-Nope")
    with pytest.raises(UserError, match="no pretrained tag"):
        resolve_pretrained("ViT-B-32", "not-a-tag")
