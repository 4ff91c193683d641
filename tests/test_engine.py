"""The shared training engine: schedule, parameter groups, validation-only selection, exact gradient
accumulation, bit-identical resume, frozen backbone, DDP with two gloo processes, error messages."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rsitr_bench.errors import CheckpointError, ConfigError
from rsitr_bench.harness.environment import resolve_device
from rsitr_bench.methods.mps_clip.losses import MPSCLIPLoss
from rsitr_bench.training.engine import (
    NON_COMPLIANT_TEST_SELECTION,
    Engine,
    TrainConfig,
    lr_factor,
    parameter_groups,
    resolve_amp,
)
from tests.fixtures.mpsclip_models import (
    ShardLoader,
    ToyMPSCLIP,
    run_context,
    synthetic_samples,
    trainable_state,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --------------------------------------------------------------------------------------- small pieces


def test_lr_schedule_by_hand():
    # 10 steps, 2 of warm-up: 1/2, 1, then (10 - s) / 8
    got = [lr_factor(s, 10, 2) for s in range(10)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert lr_factor(0, 10, 0) == 1.0


def test_no_weight_decay_for_norms_biases_and_gates():
    model = ToyMPSCLIP()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay, no_decay = parameter_groups(named, 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    names = {n for n, p in named if id(p) in ids}
    assert any(n.endswith(".gate") for n in names)  # docs/mps-clip.md bug 13: the gate scalar is not decayed
    assert any("norm_attn.weight" in n for n in names) and any(n.endswith(".bias") for n in names)
    assert all(p.ndim >= 2 for p in decay["params"])


def test_device_and_amp_resolution():
    assert resolve_device("cpu") == "cpu"
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="amp='fp8'"):
        resolve_amp("fp8", cpu)


def test_batch_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not divide"):
        Engine(TrainConfig(batch_size=8, micro_batch_size=3, device="cpu"), run_context(tmp_path))
    with pytest.raises(ConfigError, match="select_on"):
        Engine(TrainConfig(select_on="train", device="cpu"), run_context(tmp_path))


# --------------------------------------------------------------------------------------- a cheap model


class TwoTower(nn.Module):
    """Linear towers over fixed random features: enough to exercise selection and checkpoints quickly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(8, 4), nn.Linear(8, 4)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, batch):
        return {"image": F.normalize(self.image(batch["x"]), dim=-1),
                "text": F.normalize(self.text(batch["y"]), dim=-1), "ids": batch["ids"]}


def two_tower_loader(plan, n_batches=3, size=4):
    gen = torch.Generator().manual_seed(plan.epoch)
    return [{"x": torch.randn(size, 8, generator=gen), "y": torch.randn(size, 8, generator=gen),
             "ids": torch.arange(size)} for _ in range(n_batches)]


def test_selection_uses_validation_only(tmp_path):
    model, calls, snapshots = TwoTower(), [], []
    scores = {1: 10.0, 2: 30.0, 3: 20.0}

    def evaluate(m, split):
        calls.append(split)
        snapshots.append(trainable_state(m))
        assert not m.training  # evaluated in eval mode, trained in train mode
        return {"mR": scores[len(calls)], "r1": 1.0}

    cfg = TrainConfig(lr=1e-2, epochs=3, batch_size=4, device="cpu")
    summary = Engine(cfg, run_context(tmp_path)).fit(model, two_tower_loader, MPSCLIPLoss("head"), evaluate)
    assert calls == ["val", "val", "val"]  # the test split is never touched
    assert summary.selection == "val" and summary.best_epoch == 2 and summary.best_score == 30.0
    assert summary.best_val == {"mR": 30.0, "r1": 1.0} and summary.steps == 9
    assert [h["val"]["mR"] for h in summary.history] == [10.0, 30.0, 20.0]
    assert model.training
    # the model returned is the best epoch's, and so is the best checkpoint
    for name, value in snapshots[1].items():
        assert torch.equal(dict(model.named_parameters())[name], value)
    best = json.loads((tmp_path / "checkpoints" / "best" / "state.json").read_text())
    assert best["epoch"] == 2 and best["selection"] == "val"


def test_test_selection_is_stamped_non_compliant(tmp_path):
    calls = []

    def evaluate(m, split):
        calls.append(split)
        return {"mR": 1.0}

    cfg = TrainConfig(epochs=1, batch_size=4, select_on="test", device="cpu")
    summary = Engine(cfg, run_context(tmp_path)).fit(TwoTower(), two_tower_loader, MPSCLIPLoss("head"), evaluate)
    assert calls == ["test"] and summary.selection == NON_COMPLIANT_TEST_SELECTION == "test (non-compliant)"


def test_missing_metric_and_nothing_to_train(tmp_path):
    engine = Engine(TrainConfig(epochs=1, batch_size=4, device="cpu"), run_context(tmp_path))
    with pytest.raises(ConfigError, match="no 'mR'"):
        engine.fit(TwoTower(), two_tower_loader, MPSCLIPLoss("head"), lambda m, s: {"R@1": 1.0})
    frozen = TwoTower().requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Engine(TrainConfig(epochs=1, batch_size=4, device="cpu"), run_context(tmp_path / "b")).fit(
            frozen, two_tower_loader, MPSCLIPLoss("head"))


def test_out_of_memory_suggests_gradient_accumulation(tmp_path):
    class Hungry(TwoTower):
        def forward(self, batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    engine = Engine(TrainConfig(epochs=1, batch_size=4, device="cpu"), run_context(tmp_path))
    with pytest.raises(ConfigError, match="micro_batch_size to 2 .*global batch of 4"):
        engine.fit(Hungry(), two_tower_loader, MPSCLIPLoss("head"))


# --------------------------------------------------------------------------------------- MPS-CLIP runs

SAMPLES = synthetic_samples(12, seed=1)
RESUME_CFG = dict(lr=1e-3, epochs=2, batch_size=4, micro_batch_size=2, checkpoint_every=2, device="cpu", seed=7)


def _loss():
    return MPSCLIPLoss("pre_restore", learn_temperature=True, mpc_scale=10.0)


def _val(model, split):
    return {"mR": float(sum(p.detach().double().sum() for p in model.mpr.parameters()))}


@pytest.mark.slow
def test_resume_is_bit_identical_and_backbone_stays_frozen(tmp_path):
    # A: straight through (2 epochs × 3 steps, 2 micro-batches per step, dropout on)
    model_a, loss_a = ToyMPSCLIP(), _loss()
    frozen_before = {n: p.clone() for n, p in model_a.named_parameters() if not p.requires_grad}
    initial = trainable_state(model_a)
    factory = lambda plan: ShardLoader(SAMPLES, 4, plan)  # noqa: E731
    a = Engine(TrainConfig(**RESUME_CFG), run_context(tmp_path / "a")).fit(model_a, factory, loss_a, _val)
    assert a.steps == 6 and a.accumulation == 2

    # B: crashes while fetching the last step of epoch 2; the newest checkpoint is after step 4
    crash = lambda plan: ShardLoader(SAMPLES, 4, plan, fail_at=4 if plan.epoch == 1 else None)  # noqa: E731
    with pytest.raises(RuntimeError, match="simulated crash"):
        Engine(TrainConfig(**RESUME_CFG), run_context(tmp_path / "b")).fit(ToyMPSCLIP(), crash, _loss(), _val)
    assert json.loads((tmp_path / "b/checkpoints/last/state.json").read_text())["global_step"] == 4

    # C: new objects, same run directory → resumes at step 4 and ends exactly where A ended
    model_c, loss_c = ToyMPSCLIP(), _loss()
    c = Engine(TrainConfig(**RESUME_CFG), run_context(tmp_path / "b")).fit(model_c, factory, loss_c, _val)
    assert c.resumed_from_step == 4 and c.steps == 6
    assert c.history == a.history and c.best_epoch == a.best_epoch
    state_a, state_c = trainable_state(model_a), trainable_state(model_c)
    assert all(torch.equal(state_a[n], state_c[n]) for n in state_a)
    assert torch.equal(loss_a.temperature, loss_c.temperature)
    last_a = load_file(str(tmp_path / "a/checkpoints/last/train.safetensors"))
    last_c = load_file(str(tmp_path / "b/checkpoints/last/train.safetensors"))
    assert last_a.keys() == last_c.keys() and all(torch.equal(last_a[k], last_c[k]) for k in last_a)

    # the frozen backbone is bit-identical after training; the adapters did move
    for name, value in frozen_before.items():
        assert torch.equal(dict(model_a.named_parameters())[name], value), name
    assert any(not torch.equal(initial[n], v) for n, v in trainable_state(model_a).items())
    # checkpoints hold no pickles
    files = {p.suffix for p in (tmp_path / "a/checkpoints").rglob("*") if p.is_file()}
    assert files == {".safetensors", ".json"}


def test_resume_refuses_other_settings(tmp_path):
    factory = lambda plan: ShardLoader(SAMPLES[:4], 4, plan)  # noqa: E731
    cfg = dict(RESUME_CFG, epochs=1)
    Engine(TrainConfig(**cfg), run_context(tmp_path)).fit(ToyMPSCLIP(), factory, _loss(), _val)
    with pytest.raises(CheckpointError, match="lr: 0.001 → 0.002"):
        Engine(TrainConfig(**dict(cfg, lr=2e-3)), run_context(tmp_path)).fit(ToyMPSCLIP(), factory, _loss(), _val)
    with pytest.raises(CheckpointError, match="trained other parameters"):
        Engine(TrainConfig(**cfg), run_context(tmp_path)).fit(ToyMPSCLIP("parallel"), factory, _loss(), _val)
    with pytest.raises(CheckpointError, match="other frozen weights"):
        Engine(TrainConfig(**cfg), run_context(tmp_path)).fit(ToyMPSCLIP(seed=3), factory, _loss(), _val)


def _one_step_gradients(run_dir: Path, micro_batch_size: int) -> tuple[dict[str, torch.Tensor], float]:
    model = ToyMPSCLIP(dropout=0.0)
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=4, micro_batch_size=micro_batch_size, warmup=0.0,
                      device="cpu", seed=3)
    summary = Engine(cfg, run_context(run_dir)).fit(
        model, lambda plan: ShardLoader(SAMPLES[:4], 4, plan), _loss(), None)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, summary.history[0]["loss"]


def test_gradient_accumulation_reproduces_the_full_batch(tmp_path):
    full, loss_full = _one_step_gradients(tmp_path / "full", 4)
    accumulated, loss_acc = _one_step_gradients(tmp_path / "acc", 1)  # 4 micro-batches of 1 sample
    assert loss_acc == pytest.approx(loss_full, rel=1e-6)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-4, atol=1e-7, msg=name)


def test_accumulation_replays_dropout_masks(tmp_path):
    """The gradient pass must re-create exactly the features the loss saw (same dropout masks)."""
    seen = []

    class Recording(ToyMPSCLIP):
        def forward(self, batch):
            out = super().forward(batch)
            seen.append(out["image"].detach().clone())
            return out

    model = Recording(dropout=0.5)
    cfg = TrainConfig(epochs=1, batch_size=4, micro_batch_size=2, device="cpu")
    Engine(cfg, run_context(tmp_path)).fit(model, lambda plan: ShardLoader(SAMPLES[:4], 4, plan), _loss())
    assert len(seen) == 4  # no-grad pass over 2 micro-batches, then the gradient pass
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert not torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_runs(tmp_path, amp):
    cfg = TrainConfig(lr=1e-2, epochs=1, batch_size=4, micro_batch_size=2, amp=amp, device="cpu")
    model = TwoTower()
    before = trainable_state(model)
    # fp16 starts with a loss scale of 2^16, so its first steps overflow and are skipped by the scaler
    loader = lambda plan: two_tower_loader(plan, n_batches=12)  # noqa: E731
    summary = Engine(cfg, run_context(tmp_path)).fit(model, loader, MPSCLIPLoss("head"))
    assert summary.amp == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary.history)
    assert any(not torch.equal(before[n], v) for n, v in trainable_state(model).items())


# --------------------------------------------------------------------------------------- DDP (2 × gloo)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # each rank sees 2 of the 4 samples, as 2 micro-batches of 1: DDP and accumulation together
        grads, loss = _one_step_gradients(Path(out) / "run", 1)
        save_file(grads, str(Path(out) / f"grads-{rank}.safetensors"), metadata={"loss": repr(loss)})
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    context = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                                 start_method="spawn")
    try:
        while not context.join():
            pass
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    single, loss_single = _one_step_gradients(tmp_path / "single", 4)
    for rank in range(2):
        path = str(tmp_path / f"grads-{rank}.safetensors")
        grads = load_file(path)
        with safe_open(path, framework="pt") as fh:
            loss = float(fh.metadata()["loss"])
        assert loss == pytest.approx(loss_single, rel=1e-6)
        for name in single:
            torch.testing.assert_close(grads[name], single[name], rtol=1e-4, atol=1e-7, msg=name)
