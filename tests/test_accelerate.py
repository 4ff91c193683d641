"""The GPU fast path: every decision is off on the CPU, the CUDA decisions are right for the model, what was
applied is recorded, and train.compile trains and resumes with the model's own parameter names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from rsitr_bench.clip.features import similarity
from rsitr_bench.errors import ConfigError
from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
from rsitr_bench.training import accelerate
from rsitr_bench.training.engine import Engine, TrainConfig
from tests.fixtures.mpsclip_models import run_context, tiny_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU: the decisions are pure


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2), nn.Flatten())


def _tiny_resnet() -> nn.Module:
    from open_clip.modified_resnet import ModifiedResNet

    return ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=16)


# ------------------------------------------------------------------------------------------ decisions


def test_every_decision_is_off_on_the_cpu():
    conv = _conv_net()
    assert not accelerate.use_tf32(CPU)
    assert not accelerate.use_channels_last(conv, CPU)
    assert accelerate.optimizer_kind(CPU, ["cpu"]) == "default"
    assert accelerate.adamw_options("default") == {}  # torch's own AdamW, as before: CPU runs are unchanged
    fast = accelerate.decide(conv, CPU, None, None, conv.parameters())
    assert fast.record() == {"amp": "off", "tf32": False, "channels_last": False, "optimizer": "default",
                             "compile": "off"}


def test_channels_last_only_for_convolutional_towers():
    assert accelerate.is_convolutional(_conv_net()) and accelerate.is_convolutional(_tiny_resnet())
    vit = tiny_clip()  # its one convolution is the patch embedding (kernel = stride): no gain from NHWC
    assert not accelerate.is_convolutional(vit)
    assert accelerate.use_channels_last(_tiny_resnet(), CUDA) and not accelerate.use_channels_last(vit, CUDA)
    assert not accelerate.use_channels_last(nn.Linear(3, 3), CUDA)


def test_fused_adamw_only_when_every_parameter_is_on_cuda():
    fused = "fused" if accelerate.fused_adamw_supported("cuda") else "foreach"
    assert accelerate.optimizer_kind(CUDA, ["cuda", "cuda"]) == fused
    assert accelerate.optimizer_kind(CUDA, ["cuda", "cpu"]) == "foreach"
    assert accelerate.adamw_options("fused") == {"fused": True}
    assert accelerate.adamw_options("foreach") == {"foreach": True}
    assert accelerate.decide(nn.Linear(2, 2), CUDA, torch.bfloat16, None, []).record() == {
        "amp": "bfloat16", "tf32": True, "channels_last": False, "optimizer": "foreach", "compile": "off"}


def test_tf32_is_scoped_and_restored():
    before = torch.get_float32_matmul_precision()
    with accelerate.float32_matmul(False):
        assert torch.get_float32_matmul_precision() == before
    with accelerate.float32_matmul(True):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_channels_last_keeps_values_and_a_resumed_optimizer_follows_the_layout():
    torch.manual_seed(0)
    net, x = _conv_net(), torch.randn(2, 3, 8, 8)
    want = net(x)
    accelerate.prepare_model(net, accelerate.Acceleration("off", False, True, "default", "off"))
    weight = net[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x), want)
    optimizer = torch.optim.AdamW(net.parameters())
    net(x).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()  # a checkpoint stores the moments contiguous, as _save_last does
    state["state"] = {i: {k: v.contiguous() for k, v in s.items()} for i, s in state["state"].items()}
    optimizer.load_state_dict(state)
    assert optimizer.state[weight]["exp_avg"].stride() != weight.stride()
    accelerate.match_state_layouts(optimizer)
    assert all(optimizer.state[p]["exp_avg"].stride() == p.stride() for p in net.parameters())


def test_unknown_compile_backend_is_refused():
    with pytest.raises(ConfigError, match="compile_backend='nope' is not a torch.compile backend.*aot_eager"):
        accelerate.check_compile_backend("nope")


def test_scoring_similarity_on_the_cpu_is_numpy_s_product_bit_for_bit():
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((7, 16), dtype=np.float32), rng.standard_normal((11, 16), dtype=np.float32)
    got = similarity(images, texts, "cpu")
    assert isinstance(got, np.ndarray) and np.array_equal(got, images @ texts.T)
    # Trained methods hand over torch embeddings: the same product, as NumPy, as they returned before.
    image_t, text_t = torch.from_numpy(images), torch.from_numpy(texts)
    got = similarity(image_t, text_t, CPU)
    assert isinstance(got, np.ndarray) and np.array_equal(got, (image_t @ text_t.T).numpy())


# ------------------------------------------------------------------------------------------- engine


class Towers(nn.Module):
    """Two small towers with dropout: cheap to trace, and dropout makes gradient caching's replay visible."""

    def __init__(self, dropout: float = 0.1):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Linear(8, 16), nn.Dropout(dropout), nn.Linear(16, 4))
        self.text = nn.Sequential(nn.Linear(8, 16), nn.Dropout(dropout), nn.Linear(16, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, batch):
        return {"image": nn.functional.normalize(self.image(batch["x"]), dim=-1),
                "text": nn.functional.normalize(self.text(batch["y"]), dim=-1), "ids": batch["ids"]}


class Loader:
    """3 steps of 2 micro-batches of 2 samples per epoch, fixed by the epoch; optionally crashes at ``fail_at``."""

    def __init__(self, plan, fail_at=None):
        gen = torch.Generator().manual_seed(plan.epoch)
        self.micro = [{"x": torch.randn(2, 8, generator=gen), "y": torch.randn(2, 8, generator=gen),
                       "ids": torch.arange(2)} for _ in range(6)]
        self.fail_at = fail_at

    def __len__(self):
        return len(self.micro)

    def __iter__(self):
        for i, micro in enumerate(self.micro):
            if i == self.fail_at:
                raise RuntimeError("simulated crash")
            yield micro


CFG = dict(lr=1e-2, epochs=2, batch_size=4, micro_batch_size=2, checkpoint_every=2, device="cpu", seed=7)
COMPILED = dict(CFG, compile=True, compile_backend="aot_eager")


def _val(model, split):
    return {"mR": float(sum(p.detach().double().sum() for p in model.image.parameters()))}


def _names(run_dir):
    with safe_open(str(run_dir / "checkpoints/last/model.safetensors"), framework="pt") as fh:
        stored = sorted(fh.keys())
    return stored, json.loads((run_dir / "checkpoints/last/state.json").read_text())["param_names"]


def test_fit_records_what_was_applied(tmp_path):
    cfg = TrainConfig(**dict(CFG, epochs=1))
    assert not cfg.compile and cfg.compile_backend == "inductor"
    summary = Engine(cfg, run_context(tmp_path)).fit(Towers(), Loader, MPSCLIPLoss("head"), _val)
    assert summary.acceleration == {"amp": "off", "tf32": False, "channels_last": False, "optimizer": "default",
                                    "compile": "off"}
    assert summary.to_dict()["acceleration"] == summary.acceleration  # the run record's fit.train


@pytest.mark.slow
def test_compiled_training_resumes_with_the_model_s_own_parameter_names(tmp_path):
    """aot_eager runs torch.compile's tracing and autograd split without a C++ compiler; the checkpoints must
    not carry the ``_orig_mod.`` prefix of torch.compile's wrapper, and a resumed run ends where one
    straight through ends."""
    model_a = Towers()
    a = Engine(TrainConfig(**COMPILED), run_context(tmp_path / "a")).fit(model_a, Loader, MPSCLIPLoss("head"), _val)
    assert a.acceleration["compile"] == "aot_eager" and a.steps == 6
    plain = Engine(TrainConfig(**CFG), run_context(tmp_path / "plain")).fit(Towers(), Loader, MPSCLIPLoss("head"),
                                                                           _val)
    assert _names(tmp_path / "a") == _names(tmp_path / "plain")
    assert not any("_orig_mod" in name for name in _names(tmp_path / "a")[1])
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-5)

    crash = lambda plan: Loader(plan, fail_at=4 if plan.epoch == 1 else None)  # noqa: E731
    with pytest.raises(RuntimeError, match="simulated crash"):
        Engine(TrainConfig(**COMPILED), run_context(tmp_path / "b")).fit(Towers(), crash, MPSCLIPLoss("head"), _val)
    model_b = Towers()
    b = Engine(TrainConfig(**COMPILED), run_context(tmp_path / "b")).fit(model_b, Loader, MPSCLIPLoss("head"), _val)
    assert b.resumed_from_step == 4 and b.history == a.history
    state_a, state_b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    assert all(torch.equal(state_a[n], state_b[n]) for n in state_a)


@pytest.mark.slow
def test_compiled_gradient_caching_replays_dropout_masks(tmp_path):
    seen = []

    class Recording(Towers):
        def forward(self, batch):
            out = super().forward(batch)
            seen.append(out["image"].detach().clone())
            return out

    cfg = TrainConfig(**dict(COMPILED, epochs=1))
    one_step = lambda plan: Loader(plan).micro[:2]  # noqa: E731
    Engine(cfg, run_context(tmp_path)).fit(Recording(dropout=0.5), one_step, MPSCLIPLoss("head"))
    assert len(seen) == 4  # no-grad pass over 2 micro-batches (one graph), then the gradient pass (another)
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert not torch.equal(seen[0], seen[1])


@pytest.mark.slow
def test_a_backend_that_cannot_compile_here_is_a_clear_error(tmp_path, monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("no-such-c++-compiler",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    cfg = TrainConfig(**dict(CFG, epochs=1, micro_batch_size=None, compile=True))
    with pytest.raises(ConfigError, match=r"'inductor' backend cannot compile the model on this machine.*"
                                          r"train.compile=false"):
        Engine(cfg, run_context(tmp_path)).fit(Towers(), Loader, MPSCLIPLoss("head"))
