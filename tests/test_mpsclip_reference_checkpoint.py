"""Loading the MPS-CLIP reference implementation's checkpoints: goldens of both layouts and every refusal.

The golden tests regenerate full-size reference checkpoints (669 / 773 MB) from the reference fixture beside
the development checkout and compare our outputs with the reference model's; they skip in a clone without
that fixture. The refusal tests use a tiny reference-layout checkpoint built here, so they run anywhere.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rsitr_bench.clip.backbones import build_backbone
from rsitr_bench.errors import CheckpointError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.methods.mps_clip.adapter import sinusoidal_positions
from rsitr_bench.methods.mps_clip.packing import PackedPerspectives, encode_packed, fuse_for_scoring
from rsitr_bench.methods.mps_clip.reference_checkpoint import (
    describe_reference_checkpoint,
    read_reference_checkpoint,
    reference_backbone,
    to_reference,
)
from tests.fixtures.mpsclip_reference import reference_fixture_dir, write_reference_checkpoint

ATOL = 1e-4  # the fixture's suggested tolerance: >100× the observed noise, >27× below the smallest ablation
TINY = {"model": "rsitr-tiny", "pretrained": None, "bottleneck": 16, "adapter_heads": 8}
PRESET = {"pre-restore": "mps-clip-pre-restore", "head": "mps-clip-head"}


@pytest.fixture(scope="session")
def host():
    return build_plugin_host()


def make_method(host, preset: str, checkpoint: Path, **overrides):
    """An MpsClip built the way the runner builds it: a resolved config, then the plugin's factory."""
    config = resolve_config({"method": {"name": preset, "checkpoint": str(checkpoint), **overrides}}, host)
    return host.get("methods", config.method).spec.factory(config.method_options, config.train)


# ------------------------------------------------------------------------------- goldens (full size)

@pytest.fixture(scope="session")
def reference_files(tmp_path_factory):
    """Full-size reference checkpoints, written once per session on first use."""
    fixture = reference_fixture_dir()
    if fixture is None:
        pytest.skip("the MPS-CLIP reference fixture (manifests and goldens) is not beside this checkout; it exists "
                    "only in the development checkout")
    folder = tmp_path_factory.mktemp("mpsclip-reference")
    written: dict[tuple[str, str], Path] = {}

    def get(layout: str, model: str = "geo") -> Path:
        if (layout, model) not in written:
            written[layout, model] = write_reference_checkpoint(layout, folder / f"{layout}-{model}.pth", model)
        return written[layout, model]

    get.fixture = fixture
    return get


@pytest.mark.slow
@pytest.mark.parametrize("layout, model, outputs", [("pre-restore", "geo", "quickgelu"),
                                                    ("pre-restore", "vit", "gelu"),
                                                    ("head", "vit", "quickgelu")])
def test_reference_checkpoint_reproduces_reference_outputs(host, reference_files, layout, model, outputs):
    path = reference_files(layout, model)
    method = make_method(host, PRESET[layout], path)
    info = method.reference.info
    assert (info.layout, info.tensor_count) == (layout, 755 if layout == "pre-restore" else 895)
    assert info.quick_gelu is (outputs == "quickgelu")
    net = method.network("cpu").eval()

    golden = load_file(str(reference_files.fixture / f"golden-{layout}.safetensors"))
    images, subimages = golden["input.images"].float(), golden["input.subimages"].float()
    counts = golden["input.sub_counts"]
    assert counts.tolist() == [2, 0, 3]
    packed = PackedPerspectives(subimages, torch.repeat_interleave(torch.arange(3), counts), counts)
    with torch.no_grad():
        features = net({"pixels": images, "packed": packed, "tokens": golden["input.tokens"],
                        "ids": torch.arange(3)})
        g, r, has = encode_packed(net.clip.encode_image, images, packed)
        fused = fuse_for_scoring(g, r, has)
    t = features["text"]
    ours = {"g": features["image"], "t": t, "r": r, "fused": fused,
            "v": features["perspectives"].transpose(0, 1), "sim": fused @ t.T}
    for name, value in ours.items():
        torch.testing.assert_close(value, golden[f"{outputs}.{name}"], atol=ATOL, rtol=0, msg=name)

    # The tensors that enter no golden output land where the module docstring says.
    assert float(net.clip.logit_scale) == pytest.approx(4.6052, abs=1e-6)
    assert method.options.temperature == pytest.approx(0.07, abs=1e-7)
    assert method.options.ga_double_residual is True
    assert method.options.mpr_without_regions == ("zero" if layout == "pre-restore" else "global")
    provenance = method.weights_provenance()
    assert provenance["reference_checkpoint"]["layout"] == layout and len(provenance["sha256"]) == 64
    if layout == "pre-restore":
        s_mv_contr = float(method.reference.state["s_mv_contr"])
        assert method.options.lambda_mpc == pytest.approx(0.5 * torch.exp(torch.tensor(-s_mv_contr)).item())


@pytest.mark.slow
def test_guidance_backbone_is_the_reference_clip_without_adapters(reference_files):
    path = reference_files("head", "vit")
    reference = read_reference_checkpoint(path)
    backbone = reference_backbone("ViT-B-32", reference)
    assert not any(".g2a" in name for name in backbone.model.state_dict())
    block = backbone.model.visual.transformer.resblocks[0]
    assert type(block.mlp.gelu).__name__ == "QuickGELU"
    torch.testing.assert_close(block.attn.in_proj_weight,
                               reference.state["model.visual.transformer.resblocks.0.attn.in_proj_weight"])
    assert backbone.identity.endswith(reference.sha256) and "mps-clip-head" in backbone.identity


@pytest.mark.slow
def test_describe_full_size_layouts(reference_files):
    pre = describe_reference_checkpoint(reference_files("pre-restore", "vit"))
    assert (pre.layout, pre.variant, pre.tensor_count, pre.numel) == ("pre-restore", "parallel", 755, 167201834)
    assert pre.config_mapping["model"].startswith("vit") and not pre.quick_gelu
    assert "mv_margin" in pre.unused_config and "mv_k" not in pre.unused_config
    head = describe_reference_checkpoint(reference_files("head"))
    assert (head.layout, head.variant, head.tensor_count, head.numel) == ("head", "serial", 895, 193237786)
    assert head.overrides["lambda_mpc"] == 0.2 and head.overrides["loss"] == "head"


# ----------------------------------------------------------------------- tiny reference-layout files

def tiny_reference(host, layout: str) -> tuple[collections.OrderedDict, dict]:
    """A reference-layout state dict for rsitr-tiny: our model's weights under the reference's names, plus
    the reference-only tensors (``pe`` tables, ``temp``, ``s_*``)."""
    variant = "parallel" if layout == "pre-restore" else "serial"
    config = resolve_config({"method": {"name": "mps-clip", "variant": variant, **TINY}}, host)
    net = host.get("methods", "mps-clip").spec.factory(config.method_options, config.train).network("cpu")
    state = collections.OrderedDict()
    state["temp"] = torch.tensor(0.07)
    if layout == "pre-restore":
        for name in ("s_base_contr", "s_mv_contr", "s_base_trip", "s_mv_trip"):
            state[name] = torch.zeros(1)
    for key, tensor in net.state_dict().items():
        state[to_reference(layout, key)] = tensor.clone()
    for name, buffer in net.named_buffers():
        if name.endswith(".ga.pe"):
            width = buffer.shape[1]
            state[to_reference(layout, name)] = sinusoidal_positions(200, width)[None]
    config = {"embed_dim": 64, "temp1": 0.07, "model": "vit", "mv_k": 4, "mv_mlp": True, "use_multi_view": True,
              "optimizer": {"opt": "adamW", "lr": 4e-4}}
    return state, config


def save_reference(path: Path, state, config) -> Path:
    torch.save({"model": state, "config": config}, path)
    return path


def test_tiny_reference_round_trip_and_describe(host, tmp_path):
    state, config = tiny_reference(host, "pre-restore")
    path = save_reference(tmp_path / "tiny.pth", state, config)
    info = describe_reference_checkpoint(path)
    assert (info.layout, info.variant, info.tensor_count) == ("pre-restore", "parallel", len(state))
    assert info.overrides["bottleneck"] == 16 and info.overrides["lambda_mpc"] == 0.5
    assert info.unused_config == ("optimizer",) and not info.notes
    net = make_method(host, "mps-clip-pre-restore", path, **TINY).network("cpu")
    gate = "model.visual.transformer.resblocks.1.gate1"
    assert torch.equal(net.clip.visual.transformer.resblocks[1].mlp.g2a.gate, state[gate])


def test_safetensors_with_config_in_metadata(host, tmp_path):
    state, config = tiny_reference(host, "head")
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"config": json.dumps(config)})
    method = make_method(host, "mps-clip-head", path, **TINY)
    assert method.reference.info.layout == "head" and method.options.ga_double_residual
    method.network("cpu")


def test_plain_clip_checkpoint_still_loads_into_the_bare_clip(host, tmp_path):
    clip = build_backbone("rsitr-tiny", None, None, init_seed=3).model
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    assert read_reference_checkpoint(path) is None
    method = make_method(host, "mps-clip", path, model="rsitr-tiny", pretrained=None)
    assert method.reference is None and not method.options.ga_double_residual
    net = method.network("cpu")
    torch.testing.assert_close(net.clip.token_embedding.weight, clip.token_embedding.weight)
    with pytest.raises(CheckpointError, match="not an MPS-CLIP reference checkpoint"):
        describe_reference_checkpoint(path)


@pytest.mark.parametrize("preset, overrides, needs", [
    ("mps-clip-pre-restore", {}, "variant='parallel'"),
    ("mps-clip-head", {"mpr_heads": 2}, "mpr_heads=2"),
    ("mps-clip", {"adapter_heads": 4}, "adapter_heads=4"),
])
def test_options_contradicting_the_checkpoint_are_refused(host, tmp_path, preset, overrides, needs):
    path = save_reference(tmp_path / "head.pth", *tiny_reference(host, "head"))
    with pytest.raises(CheckpointError) as err:
        make_method(host, preset, path, **{**TINY, **overrides})
    assert needs in str(err.value) and "mps-clip-head" in str(err.value) and str(path) in str(err.value)


def test_missing_and_extra_keys_are_listed_by_reference_name(host, tmp_path):
    state, config = tiny_reference(host, "pre-restore")
    gone = "model.transformer.resblocks.1.g2adapter.BiShareAdapterxx.l2.bias"
    del state[gone]
    state["model.visual.transformer.resblocks.0.g2adapter.extra.weight"] = torch.zeros(2)
    method = make_method(host, "mps-clip-pre-restore", save_reference(tmp_path / "bad.pth", state, config), **TINY)
    with pytest.raises(CheckpointError) as err:
        method.network("cpu")
    message = str(err.value)
    assert f"1 missing: {gone}" in message
    assert "1 unexpected: model.visual.transformer.resblocks.0.g2adapter.extra.weight" in message


def test_wrong_sinusoid_table_is_refused(host, tmp_path):
    state, config = tiny_reference(host, "head")
    key = "model.transformer.resblocks.0.g2adapter.global_attention.attn.pos_enc.pe"
    state[key] = state[key].flip(-1)  # sine and cosine columns swapped
    method = make_method(host, "mps-clip-head", save_reference(tmp_path / "pe.pth", state, config), **TINY)
    with pytest.raises(CheckpointError, match=f"sinusoidal table {key} differs"):
        method.network("cpu")


def test_config_contradicting_the_weights_is_refused(host, tmp_path):
    state, config = tiny_reference(host, "head")
    path = save_reference(tmp_path / "k.pth", state, {**config, "mv_k": 3})
    with pytest.raises(CheckpointError, match="mv_k=3 but its weights hold MPR heads = 4"):
        describe_reference_checkpoint(path)


def test_pre_restore_without_backbone_switch_is_refused(host, tmp_path):
    state, config = tiny_reference(host, "pre-restore")
    del config["model"]
    with pytest.raises(CheckpointError, match="depends on it"):
        describe_reference_checkpoint(save_reference(tmp_path / "nomodel.pth", state, config))


def test_truncated_file_is_refused(host, tmp_path):
    whole = save_reference(tmp_path / "whole.pth", *tiny_reference(host, "head"))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"Could not read checkpoint {cut}.*damaged or incomplete"):
        make_method(host, "mps-clip-head", cut, **TINY)


class YamlLikeConfig(dict):
    """Stands in for ruamel.yaml's CommentedMap: a dict subclass that only unpickles by running its class."""


def test_pickle_that_needs_code_is_refused_with_a_conversion_hint(host, tmp_path):
    state, config = tiny_reference(host, "head")
    path = save_reference(tmp_path / "ruamel.pth", state, YamlLikeConfig(config))
    with pytest.raises(CheckpointError) as err:
        describe_reference_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "YamlLikeConfig" in message and "CommentedMap" in message
    assert "weights_only=False" in message and "safetensors" in message


def test_non_mapping_file_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        describe_reference_checkpoint(path)
