"""The MPS-CLIP ablation switches: each removes exactly the part it names, and a configuration that would
train nothing the scores use is refused with a pointer to ``rsitr-bench eval``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rsitr_bench
from rsitr_bench.errors import ConfigError
from rsitr_bench.harness.config import resolve_config
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.methods.mps_clip.adapter import G2AAdapter
from rsitr_bench.methods.mps_clip.losses import LossWeights, MPSCLIPLoss
from rsitr_bench.methods.mps_clip.method import MpsClip, MpsClipOptions, MpsClipTrain
from rsitr_bench.methods.mps_clip.mpr import MPR, NoMPR
from rsitr_bench.methods.mps_clip.packing import PackedPerspectives, encode_packed, fuse_for_scoring
from tests.helpers import home_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TERMS = ("con", "tri", "mpc", "mpt")


def _options(**values) -> MpsClipOptions:
    return resolve_config({"method": {"name": "mps-clip", **values}}, build_plugin_host()).method_options


def _features(batch: int = 6, dim: int = 8, heads: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=gen), dim=-1)  # noqa: E731
    return {"image": unit(batch, dim), "text": unit(batch, dim), "perspectives": unit(batch, heads, dim),
            "ids": torch.tensor([0, 0, 1, 2, 3, 3])}


# ------------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("term", TERMS)
def test_a_zero_lambda_removes_its_term_from_the_loss(term):
    weights = _options(**{f"lambda_{term}": 0.0}).loss_weights()
    assert getattr(weights, term) == 0.0
    assert all(getattr(weights, t) == getattr(LossWeights.published("head"), t) for t in TERMS if t != term)
    out = MPSCLIPLoss(weights, mpc_scale=10.0)(_features())
    assert term not in out and set(out) == {*TERMS, "loss"} - {term}
    full = MPSCLIPLoss("head", mpc_scale=10.0)(_features())
    expected = sum(getattr(weights, t) * full[t] for t in TERMS if t != term)
    assert torch.allclose(out["loss"], expected)


def test_lambdas_override_the_published_combination_they_are_applied_to():
    weights = _options(loss="pre_restore", lambda_tri=0.25).loss_weights()
    assert (weights.con, weights.tri, weights.mpc, weights.mpt) == (0.5, 0.25, 0.5, 0.5)


def test_all_four_lambdas_at_zero_is_refused_before_any_run():
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        _options(lambda_con=0, lambda_tri=0, lambda_mpc=0, lambda_mpt=0)


@pytest.mark.parametrize("values,message", [
    ({"lambda_con": -1.0}, "lambda_con"),
    ({"lambda_tri": "a lot"}, "lambda_tri"),
    ({"test_fusion": "max"}, "test_fusion"),
    ({"adapters": "sometimes"}, "adapters"),
])
def test_bad_switch_values_name_the_option(values, message):
    with pytest.raises(ConfigError, match=message):
        _options(**values)


# ------------------------------------------------------------------------------------------------ modules


@pytest.mark.slow
def test_adapters_off_leaves_no_adapter_parameters():
    with_adapters = MpsClip(_options(), MpsClipTrain()).network()
    without = MpsClip(_options(adapters=False), MpsClipTrain()).network()
    assert any(isinstance(m, G2AAdapter) for m in with_adapters.modules())
    assert not any(isinstance(m, G2AAdapter) for m in without.modules())
    assert not any("g2a" in name for name, _ in without.named_parameters())
    trainable = {name for name, p in without.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("mpr.") for name in trainable)  # only the MPR is left to train


@pytest.mark.slow
def test_mpr_off_makes_the_perspective_r_itself():
    net = MpsClip(_options(mpr=False), MpsClipTrain()).network()
    assert isinstance(net.mpr, NoMPR) and not any(isinstance(m, MPR) for m in net.modules())
    net.eval()
    size = net.clip.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, *size, generator=gen)
    subs = [torch.randn(2, 3, *size, generator=gen), torch.zeros(0, 3, *size), torch.randn(1, 3, *size, generator=gen)]
    packed = PackedPerspectives.from_list(subs, pixels.shape[1:])
    tokens = torch.zeros(3, net.clip.context_length, dtype=torch.long)
    with torch.no_grad():
        out = net({"pixels": pixels, "packed": packed, "tokens": tokens, "ids": torch.arange(3)})
        g, r, has = encode_packed(net.clip.encode_image, pixels, packed)
    assert out["perspectives"].shape == (3, 1, g.shape[1])
    assert torch.allclose(out["perspectives"][:, 0], torch.where(has[:, None], r, g))  # r, or g without sub-images


def test_global_fusion_is_g_and_fused_is_the_published_mean():
    from rsitr_bench.methods.mps_clip.method import MpsClipNet

    g, r = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    has = torch.tensor([True, False, True, True])
    assert torch.equal(MpsClipNet(torch.nn.Linear(1, 1), NoMPR(), test_fusion="global").fuse(g, r, has), g)
    assert torch.equal(MpsClipNet(torch.nn.Linear(1, 1), NoMPR()).fuse(g, r, has), fuse_for_scoring(g, r, has))


# ------------------------------------------------------------------------------------------- through a run

TINY_DATA = {"n_train": 0, "n_val": 0, "n_test": 16}


def _ranks(outcome) -> dict[str, np.ndarray]:
    with np.load(outcome.run_dir / "seeds" / "0" / "ranks.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
@pytest.mark.parametrize("adapters", [True, False])
def test_global_fusion_scores_are_the_untrained_backbone_g_only_scores(adapters):
    """Untrained, with ``test_fusion: global`` the gallery is g of the frozen backbone (G²A adapters start as
    the identity), so every query ranks exactly as under ``global-clip`` on the same backbone."""
    mps = rsitr_bench.evaluate("mps-clip", method_options={"test_fusion": "global", "adapters": adapters},
                               dataset_options=TINY_DATA, progress=False)
    base = rsitr_bench.evaluate("global-clip", dataset_options=TINY_DATA, progress=False)
    assert mps.metrics["fingerprints"]["test"]["sha256"] == base.metrics["fingerprints"]["test"]["sha256"]
    ours, theirs = _ranks(mps), _ranks(base)
    assert set(ours) == set(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    fused = rsitr_bench.evaluate("mps-clip", method_options={"adapters": adapters}, dataset_options=TINY_DATA,
                                 progress=False)
    assert any(not np.array_equal(_ranks(fused)[k], theirs[k]) for k in theirs)  # the switch did something


def test_training_without_adapters_is_refused_with_a_pointer_to_eval():
    method = MpsClip(_options(adapters=False), MpsClipTrain())
    with pytest.raises(ConfigError, match="rsitr-bench eval"):
        method.fit(train=object(), val=None, ctx=None)  # refused before the split or context is touched


@pytest.mark.slow
def test_run_without_adapters_fails_with_exit_2_and_the_eval_command(capsys):
    from rsitr_bench.cli.main import main

    assert main(["run", "--method", "mps-clip", "--no-progress", "--set", "method.adapters=false",
                 "--set", "dataset.n_train=8", "--set", "dataset.n_val=8", "--set", "dataset.n_test=8"]) == 2
    assert "`rsitr-bench eval --method mps-clip --set method.adapters=false`" in \
        capsys.readouterr().err.replace("\n  ", " ")
    (row,) = home_registry().list()
    assert row.status == "failed"
