"""G²A adapters and MPR: identity at initialisation, spec parameter counts, freezing, strict checkpoints."""

from __future__ import annotations

import copy
import logging

import open_clip
import pytest
import torch

from rsitr_bench.errors import CheckpointError
from rsitr_bench.methods.mps_clip.adapter import (
    GatedGlobalAttention,
    ParallelG2A,
    SerialG2A,
    add_g2a_adapters,
    mark_trainable,
    sinusoidal_positions,
)
from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
from rsitr_bench.methods.mps_clip.mpr import MPR
from rsitr_bench.training.engine import load_trainable, save_trainable
from tests.fixtures.mpsclip_models import SMALL_ADAPTER, ToyMPSCLIP, collate, synthetic_samples, tiny_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@pytest.fixture(scope="module")
def vit_b32_meta():
    """ViT-B-32 on the meta device: real shapes, no memory, no weights (0.05 s instead of 2 s)."""
    def build():
        logging.disable(logging.WARNING)
        try:
            with torch.device("meta"):
                return open_clip.create_model("ViT-B-32", pretrained=None, device="meta")
        finally:
            logging.disable(logging.NOTSET)
    return build


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 64, 64, generator=gen)
    texts = torch.randint(1, 49000, (3, 32), generator=gen)
    texts[:, 9] = 49407
    return images, texts


# ------------------------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("width", [64, 512, 768])
def test_serial_adapter_matches_spec_formula(width):
    adapter = SerialG2A(width, bottleneck=128, heads=8, dropout=0.1, drop_path=0.1, gate_init=0.6,
                        ga_double_residual=False, batch_first=True)
    assert n_params(adapter) == 257 * width + 216_321


def test_ga_blocks_match_spec_counts():
    assert n_params(GatedGlobalAttention(128, 8, 0.1, 0.1, False)) == 133_632
    assert n_params(GatedGlobalAttention(64, 8, 0.1, 0.1, False)) == 34_048  # GA64


def test_vit_b32_serial_counts(vit_b32_meta):
    model = vit_b32_meta()
    adapters = add_g2a_adapters(model, "serial")
    per = [n_params(a) for a in adapters]
    assert per[:12] == [413_697] * 12 and per[12:] == [347_905] * 12
    assert sum(per) == 9_139_224
    model.mpr = MPR(512, heads=4).to("meta")
    assert n_params(model.mpr) == 2_101_248
    assert mark_trainable(model) == 11_240_472  # docs/mps-clip.md §2.5: HEAD's trainable total
    assert mark_trainable(model, train_mpr=False) == 9_139_224
    # 302 CLIP tensors + 23 per adapter: HEAD's 24 minus the PE buffer, which is no longer persistent
    state = model.state_dict()
    assert len(state) == 302 + 24 * 23 + 16
    assert not any(k.endswith(".pe") for k in state)


def test_vit_b32_parallel_counts(vit_b32_meta):
    model = vit_b32_meta()
    adapters = add_g2a_adapters(model, "parallel")
    per = [n_params(a) for a in adapters]
    # docs/mps-clip.md §2.4: vision 263,552 and text 248,385 per block, plus one block gate each
    assert per[:12] == [263_552 + 1] * 12 and per[12:] == [248_385 + 1] * 12
    assert sum(per) == 6_143_268
    model.mpr = MPR(512, heads=4).to("meta")
    assert mark_trainable(model, train_mpr=False) == 6_143_268  # pre-restore left the MPR frozen
    # the released checkpoints' 755 tensors minus 12 PE buffers, 4 uncertainty scalars and 1 temperature
    assert len(model.state_dict()) == 755 - 12 - 4 - 1


def test_mpr_shapes_and_init():
    mpr = MPR(32, heads=3)
    v = mpr(torch.randn(5, 32))
    assert v.shape == (5, 3, 32)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(5, 3))
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in mpr.modules() if isinstance(m, torch.nn.Linear))
    assert n_params(MPR(32, heads=3, mlp=False)) == 3 * (32 * 32 + 32)
    with pytest.raises(ValueError, match="K >= 1"):
        MPR(32, heads=0)


# ------------------------------------------------------------------------------------ behaviour


@pytest.mark.parametrize("variant", ["serial", "parallel"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_adapters_are_identity_at_init(variant, train_mode):
    plain = tiny_clip(seed=3)
    adapted = copy.deepcopy(plain)
    add_g2a_adapters(adapted, variant)  # spec sizes (b = 128, 8 heads) on the tiny model
    images, texts = _inputs()
    for m in (plain, adapted):
        m.train(train_mode)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(plain.encode_image(images), adapted.encode_image(images))
        assert torch.equal(plain.encode_text(texts), adapted.encode_text(texts))


@pytest.mark.parametrize("variant", ["serial", "parallel"])
def test_adapters_change_outputs_once_trained(variant):
    model = tiny_clip()
    images, texts = _inputs()
    with torch.no_grad():
        before = model.encode_image(images), model.encode_text(texts)
    adapters = add_g2a_adapters(model, variant, **SMALL_ADAPTER)
    with torch.no_grad():
        for a in adapters:
            a.up.weight.normal_(std=0.1)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(images), before[0])
        assert not torch.allclose(model.encode_text(texts), before[1])


def test_deepcopy_gets_its_own_adapters():
    """Bug 20: nothing may be shared between model instances."""
    model = tiny_clip()
    add_g2a_adapters(model, "serial", **SMALL_ADAPTER)
    twin = copy.deepcopy(model)
    images, _ = _inputs()
    model.eval()
    twin.eval()
    with torch.no_grad():
        before = model.encode_image(images)
        for block in twin.visual.transformer.resblocks:
            block.g2a.up.weight.normal_(std=0.1)
        assert torch.equal(model.encode_image(images), before)
        assert not torch.allclose(twin.encode_image(images), before)


def test_double_injection_and_unknown_variant_are_rejected():
    model = tiny_clip()
    with pytest.raises(ValueError, match="unknown G²A variant"):
        add_g2a_adapters(model, "sideways")
    add_g2a_adapters(model, "serial", **SMALL_ADAPTER)
    with pytest.raises(ValueError, match="already has a G²A adapter"):
        add_g2a_adapters(model, "parallel", **SMALL_ADAPTER)


def test_ga_residual_modes_differ_but_share_parameters():
    torch.manual_seed(0)
    single = GatedGlobalAttention(16, 2, 0.0, 0.0, double_residual=False).eval()
    double = GatedGlobalAttention(16, 2, 0.0, 0.0, double_residual=True).eval()
    double.load_state_dict(single.state_dict())
    y = torch.randn(2, 7, 16)
    with torch.no_grad():
        a = single.attn(single.norm_attn(y) + sinusoidal_positions(7, 16), *(2 * [single.norm_attn(y)
                        + sinusoidal_positions(7, 16)]), need_weights=False)[0]
        # after the attention sub-block: Y + LN(A) once, Y + LN(Y + A) with the reference's double residual
        expected_single = y + single.norm_out(a)
        expected_double = y + single.norm_out(y + a)

        def ffn(m, x):
            f = m.ffn_out(torch.relu(m.ffn_dw(m.ffn_in(x.transpose(1, 2))))).transpose(1, 2)
            return x + f

        torch.testing.assert_close(single(y), ffn(single, expected_single))
        torch.testing.assert_close(double(y), ffn(single, expected_double))


def test_position_encoding_is_sinusoidal_non_persistent_and_grows():
    pe = sinusoidal_positions(3, 4)
    # pe[p, 2i] = sin(p / 10000^(2i/d)), pe[p, 2i+1] = cos(...)
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [0.8414709848, 0.5403023059, 0.0099998333, 0.9999500004],
                             [0.9092974268, -0.4161468365, 0.0199986667, 0.9998000067]])
    torch.testing.assert_close(pe, expected)
    ga = GatedGlobalAttention(8, 2, 0.0, 0.0, False).eval()
    assert "pe" not in ga.state_dict()
    ga(torch.randn(1, 5, 8))
    assert ga.pe.shape == (5, 8)
    ga(torch.randn(1, 300, 8))
    assert ga.pe.shape == (300, 8)


def test_parallel_side_branch_only_in_text_tower():
    model = tiny_clip()
    adapters = add_g2a_adapters(model, "parallel", **SMALL_ADAPTER)
    assert [a.side_branch for a in adapters] == [False] * 2 + [True] * 2
    assert all(isinstance(a, ParallelG2A) for a in adapters)
    # CLIP keys are untouched: the adapter is the last stage of each MLP
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in model.state_dict()
    assert "visual.transformer.resblocks.0.mlp.g2a.up.weight" in model.state_dict()


# ------------------------------------------------------------------------------------ freezing


def test_mark_trainable_selects_adapters_and_mpr_only():
    model = ToyMPSCLIP(train_mpr=False)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".g2a." in n for n in names)
    assert not model.clip.logit_scale.requires_grad
    mark_trainable(model, train_mpr=True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("mpr.") for n in names)
    assert all(".g2a." in n or n.startswith("mpr.") for n in names)


@pytest.mark.parametrize("variant", ["serial", "parallel"])
def test_gradients_reach_only_trainable_parameters(variant):
    model = ToyMPSCLIP(variant)
    loss = MPSCLIPLoss("head", mpc_scale=10.0)(model(collate(synthetic_samples(4))))["loss"]
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # W_u is zero at init, so the first gradient flows into the up-projections (and the MPR)
    ups = [p.grad for n, p in model.named_parameters() if n.endswith("g2a.up.weight")]
    assert all(float(g.abs().sum()) > 0 for g in ups)


@pytest.mark.parametrize("source,target", [("serial", "parallel"), ("parallel", "serial")])
def test_checkpoint_of_other_variant_fails_strict_loading(tmp_path, source, target):
    path = tmp_path / "model.safetensors"
    save_trainable(ToyMPSCLIP(source), path)
    receiver = ToyMPSCLIP(target)
    before = {n: p.clone() for n, p in receiver.named_parameters()}
    with pytest.raises(CheckpointError, match="missing: .*unexpected: ") as err:
        load_trainable(receiver, path)
    assert ".g2a." in str(err.value)
    assert all(torch.equal(before[n], p) for n, p in receiver.named_parameters())  # nothing half-loaded
    same = ToyMPSCLIP(source, seed=5)
    load_trainable(same, path)
