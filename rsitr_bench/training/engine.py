"""The shared training engine of every trainable method.

One job: turn (model, data, loss, validation callback) into a trained model selected on validation, with
the bookkeeping every method needs — device and AMP choice, the GPU fast path (TF32, channels-last, fused AdamW,
optional torch.compile: rsitr_bench/training/accelerate.py), exact gradient accumulation, AdamW with a
warm-up/decay schedule, seeding, pickle-free checkpoints with bit-identical resume, progress bars, and DDP
under ``torchrun``.

The contract with a method (each trainable method plugin implements it):

* ``model(micro_batch) -> dict[str, Tensor]`` — the forward pass *is* the encoder: it returns per-sample
  features with a leading batch dimension (e.g. ``{"image": g, "text": t, "perspectives": v, "ids": ids}``).
  Going through ``forward`` is what lets DDP see the computation.
* ``loss_fn(features) -> Tensor | {"loss": Tensor, …}`` — computed on the features of the **whole global
  batch** (all micro-batches of all ranks, concatenated rank-major). If ``loss_fn`` is an ``nn.Module``
  its trainable parameters (e.g. a learnable temperature) are optimised and checkpointed too.
* ``train_loader_factory(plan: LoaderPlan) -> iterable with __len__`` of micro-batches of exactly
  ``plan.micro_batch_size`` samples from this rank's shard, deterministic given ``plan`` (seed its shuffling
  from ``plan.seed`` and ``plan.epoch``); incomplete trailing micro-batches must be dropped. A loader may also
  offer ``iter_from(n)``, an iterator from micro-batch ``n`` on that does not build the ones before it:
  a resumed epoch then skips what it already consumed without decoding it (rsitr_bench/training/loader.py).
* ``evaluate_fn(model, split) -> {metric: value}`` — ``split`` is ``"val"``; ``"test"`` only under the
  legacy ``select_on="test"``, which stamps the summary ``selection="test (non-compliant)"`` (docs/mps-clip.md
  §6.4: the reference selects epochs on test).

**Gradient accumulation keeps the global-batch loss exactly** (docs/mps-clip.md §11). A contrastive loss
over a micro-batch is a different objective from the same loss over the full batch (fewer negatives, other
positives), so averaging micro-batch losses would not reproduce a global batch of 128. Instead, when a
global step has several micro-batches, the engine (1) encodes every micro-batch without gradients,
remembering the RNG state before each, (2) computes the loss once on the concatenated features and
back-propagates it to the *features* only, (3) re-encodes each micro-batch with gradients under the same RNG
state (identical dropout masks) and back-propagates the feature gradients into the model ("gradient
caching"). Gradients equal those of the full batch up to float rounding, at the cost of one extra
forward pass per micro-batch; with a single micro-batch the first encoding keeps its graph and nothing is
recomputed. Under DDP, features are all-gathered once per step; gradients flow only into the local slice
and are scaled by the world size, so DDP's averaging yields the full-batch gradient.

Optimiser (docs/mps-clip.md §5): AdamW, betas (0.9, 0.98), eps 1e-8, weight decay 0.04 except for parameters with fewer
than two dimensions — biases, norm weights and gate scalars (bug 13 of docs/mps-clip.md §9 fixed) and scalar
temperatures.
Schedule: linear warm-up over ``int(warmup·total)`` steps to ``lr``, then linear decay, set every step.

Seeding and resume: every RNG (Python, NumPy, torch) is reseeded at the start of each epoch from
(seed, epoch, rank). Resuming mid-epoch reseeds, rebuilds that epoch's loader, skips the micro-batches
already consumed, then restores the RNG states saved with the checkpoint, so a resumed run continues
bit-identically on CPU (on CUDA, as deterministically as the kernels allow). Evaluation runs on rank 0 only
and its metrics are broadcast; ``ids`` in the features must be global image ids (same image ⇒ same id on
every rank).

Checkpoints (``<run_dir>/checkpoints/{last,best}/``) hold only what training changes: the trainable
parameters (``model.safetensors``), optimiser moments, loss parameters and per-rank RNG states
(safetensors), and scalars in ``state.json`` (written last; every tensor file carries the step in its
metadata, so a torn checkpoint is detected). Nothing is pickled. The frozen parameters are not stored,
but their digest is, and resuming on a different frozen backbone is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist
from pydantic import AfterValidator, Field
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from tqdm import tqdm

from rsitr_bench.api import RunContext, Selection
from rsitr_bench.errors import CheckpointError, ConfigError
from rsitr_bench.harness.atomic import write_bytes_atomic, write_json_atomic
from rsitr_bench.harness.environment import resolve_device, seed_everything
from rsitr_bench.harness.options import validated
from rsitr_bench.training import accelerate
from rsitr_bench.training.profile import StageClock
from rsitr_bench.training.tensorboard import TENSORBOARD_DIR, EpochScalars, require_tensorboard

AmpSetting = Literal["auto", "off", "bf16", "fp16"]
KeepCheckpoints = Literal["best", "last", "none"]
AMP_CHOICES: tuple[str, ...] = get_args(AmpSetting)
KEEP_CHOICES: tuple[str, ...] = get_args(KeepCheckpoints)
CHECKPOINT_DIR = "checkpoints"  # under the run context's run_dir (a seed's directory)
NON_COMPLIANT_TEST_SELECTION = "test (non-compliant)"
# Config fields that may change between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = ("device", "resume", "checkpoint_every", "restore_best", "keep_checkpoints", "tensorboard",
                       "num_workers", "prefetch_factor", "persistent_workers", "pin_memory",
                       "compile", "compile_backend")


def _at_least_one_epoch(epochs: int) -> int:
    """``epochs >= 1``, said in words that point at the command for scoring without training: ``epochs=0``
    would otherwise train nothing and still be recorded as a trained, compliant result."""
    if epochs < 1:
        raise ValueError("a training run needs at least 1 epoch (to score a method without training it, use "
                         "`rsitr-bench eval`)")
    return epochs


# The declared ranges of the fields a method's own defaults redeclare (``lr: LearningRate = 3e-4``), so a
# subclass keeps the range along with the type.
LearningRate = Annotated[float, Field(gt=0)]
Epochs = Annotated[int, AfterValidator(_at_least_one_epoch)]
BatchSize = Annotated[int, Field(ge=1)]
_Beta = Annotated[float, Field(ge=0, lt=1)]


@dataclass
class TrainConfig:
    """Training hyperparameters. The defaults are MPS-CLIP HEAD's optimisation recipe (docs/mps-clip.md §5),
    except that the best epoch is selected on validation; each method subclasses this with its own defaults
    (``MpsClipTrain``, ``FullFtTrain``).

    Attributes:
        batch_size: the *global* batch: all ranks and all micro-batches of one optimiser step.
        micro_batch_size: samples per forward pass on one rank; None = the whole per-rank batch.
        warmup: fraction of all steps spent in linear warm-up.
        amp: ``auto`` (bf16 on CUDA where supported, else fp16; off on CPU and MPS), ``off``, ``bf16`` or
            ``fp16``.
        select_on: ``val`` (always, for compliant runs) or ``test`` (legacy reproduction, stamped).
        select_metric: the key of ``evaluate_fn``'s result that selects the best epoch (higher is better).
        seed: None = the run context's seed.
        device: ``auto`` = the run context's device, or the best available one if that is ``auto`` too.
        grad_clip: max global gradient norm, or None.
        checkpoint_every: also checkpoint every N optimiser steps (0: at epoch ends only).
        resume: continue from ``<run_dir>/checkpoints/last`` when it exists.
        restore_best: load the best epoch's weights into the model when ``fit`` returns.
        keep_checkpoints: what stays on disk once the seed has its result (see :func:`prune_checkpoints`):
            ``best`` (the selected weights), ``last`` (weights and optimiser state of the last step) or
            ``none``. Until then both are kept, so an unfinished seed resumes.
        tensorboard: write per-epoch loss, lr and validation metrics to ``<run_dir>/tensorboard/`` (needs
            the optional ``tensorboard`` package; :mod:`rsitr_bench.training.tensorboard`).
        num_workers: DataLoader worker processes that decode and augment samples (and read images when
            scoring) while the model trains; 0 builds them in the training process. Results do not depend
            on it: each sample is built under a seed of its own (rsitr_bench/training/loader.py).
        prefetch_factor: micro-batches each worker prepares ahead (with workers only).
        persistent_workers: keep the workers, and what they loaded, from one epoch to the next.
        pin_memory: copy micro-batches to the GPU from page-locked memory, without blocking (CUDA only).
        The four loader fields are the engine's, not a method's, because they say how training runs, not
        what it computes: like ``device``, they may change when a run is resumed.
        compile: run the training forward through ``torch.compile`` (checkpoints keep the model's own
            parameter names, so a compiled run and a plain one resume each other's checkpoints; like
            ``device`` it may change on resume). See :mod:`rsitr_bench.training.accelerate`.
        compile_backend: the ``torch.compile`` backend: ``inductor`` (needs a C++ compiler on the CPU,
            Triton on CUDA), or ``aot_eager``/``eager``, which compile nothing and run anywhere.
    """

    lr: LearningRate = 4e-5
    epochs: Epochs = 35
    batch_size: BatchSize = 128
    micro_batch_size: BatchSize | None = None
    weight_decay: Annotated[float, Field(ge=0)] = 0.04
    betas: tuple[_Beta, _Beta] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    warmup: Annotated[float, Field(ge=0, le=1)] = 0.1
    amp: AmpSetting = "auto"
    select_on: Literal["val", "test"] = "val"
    select_metric: str = "mR"
    seed: int | None = None
    device: str = "auto"
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    checkpoint_every: Annotated[int, Field(ge=0)] = 0
    resume: bool = True
    restore_best: bool = True
    keep_checkpoints: KeepCheckpoints = "best"
    tensorboard: Annotated[bool, AfterValidator(require_tensorboard)] = False
    num_workers: Annotated[int, Field(ge=0)] = 2
    prefetch_factor: Annotated[int, Field(ge=1)] = 2
    persistent_workers: bool = True
    pin_memory: bool = True
    compile: bool = False
    compile_backend: str = "inductor"


@dataclass(frozen=True)
class LoaderPlan:
    """What ``train_loader_factory`` is asked for: one epoch of this rank's shard in micro-batches.
    ``epochs`` is the run's number of epochs, when known (a loader that prepares the next epoch's batches
    early stops at the last)."""

    epoch: int
    micro_batch_size: int
    rank: int
    world_size: int
    seed: int
    epochs: int | None = None


@dataclass
class TrainSummary:
    """What ``fit`` returns. Epochs are numbered from 1; ``best_val`` holds the selecting split's metrics
    at the best epoch (validation, unless ``selection`` says otherwise). ``selection`` is the label reports
    print, ``selected_on`` the typed split that decides compliance (see :class:`rsitr_bench.api.FitSummary`).
    ``profile`` has each epoch's seconds per stage (rsitr_bench/training/profile.py), beside ``history``
    rather than in it: a resumed run reproduces the history exactly, never the timings. ``acceleration``
    says what the GPU fast path applied (:class:`rsitr_bench.training.accelerate.Acceleration`)."""

    best_epoch: int | None
    best_score: float | None
    best_val: dict[str, float]
    selection: str
    selected_on: Selection
    steps: int
    epochs: int
    trainable_params: int
    select_metric: str = "mR"
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    amp: str = "off"
    world_size: int = 1
    batch_size: int = 0
    micro_batch_size: int = 0
    accumulation: int = 1
    resumed_from_step: int | None = None
    checkpoint_dir: str | None = None
    wall_s: float = 0.0
    profile: list[dict[str, Any]] = field(default_factory=list)
    acceleration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- helpers


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``setting`` on ``device``, or None for full precision."""
    if setting not in AMP_CHOICES:
        raise ConfigError(f"amp={setting!r} is not one of {', '.join(AMP_CHOICES)}")
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if setting == "bf16" else torch.float16


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def parameter_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """AdamW groups: decay for matrices and kernels; none for parameters with < 2 dims (biases, norm
    weights, gate scalars, temperatures). The reference decayed its gate scalar (docs/mps-clip.md §9 item 13)."""
    decay, no_decay = [], []
    for _, p in named_params:
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Multiplier of the base lr for 0-based optimiser step ``step``: ``(step+1)/warmup_steps`` during
    warm-up, then linear decay ``(total − step)/(total − warmup_steps)``; positive on every real step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def move_to(obj: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) mappings, lists, tuples and objects with a ``to`` method."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return type(obj)({k: move_to(v, device) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    if callable(getattr(obj, "to", None)):
        return obj.to(device)
    return obj


def trainable_named_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def save_trainable(model: nn.Module, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write the model's trainable parameters (by name) to a safetensors file, atomically."""
    tensors = {n: p.detach().cpu().contiguous() for n, p in trainable_named_parameters(model)}
    write_bytes_atomic(Path(path), safetensors_bytes(tensors, metadata=dict(metadata or {})))


def _key_diff(missing: Sequence[str], unexpected: Sequence[str], limit: int = 8) -> str:
    def show(keys: Sequence[str]) -> str:
        return ", ".join(keys[:limit]) + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {show(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
    return "; ".join(parts)


def load_trainable(model: nn.Module, path: Path) -> None:
    """Load a :func:`save_trainable` file strictly into the model's trainable parameters.

    The key sets must match exactly and every shape must agree; otherwise :class:`CheckpointError` names
    the missing and unexpected keys (e.g. a checkpoint of the other G²A variant). Never partial
    (docs/mps-clip.md §9 item 3).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    tensors = load_file(str(path), device="cpu")
    params = dict(trainable_named_parameters(model))
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model's trainable parameters: "
                              f"{_key_diff(missing, unexpected)}")
    bad = [f"{n} {tuple(tensors[n].shape)} vs {tuple(p.shape)}" for n, p in params.items()
           if tensors[n].shape != p.shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {len(bad)} parameters: {'; '.join(bad[:8])}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n])


def frozen_digest(model: nn.Module) -> str:
    """BLAKE2b digest of the frozen parameters (names, dtypes, shapes, bytes): the part of the model a
    checkpoint does not store must be the same when it is resumed."""
    h = hashlib.blake2b(digest_size=16)
    for n, p in model.named_parameters():
        if p.requires_grad:
            continue
        t = p.detach().cpu().contiguous().reshape(-1)
        h.update(f"{n}|{t.dtype}|{tuple(p.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _RNG:
    """Capture and restore the RNG streams that a forward pass consumes (CPU and the CUDA device)."""

    def __init__(self, device: torch.device):
        self.device = device

    def capture(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def restore(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)


def _rng_state_tensors() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All global RNG states as tensors plus JSON strings (for safetensors metadata)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta = {"numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
            "python": json.dumps(random.getstate())}
    return tensors, meta


def _restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss_next))


def _file_step(path: Path) -> str | None:
    with safe_open(str(path), framework="pt") as fh:
        return (fh.metadata() or {}).get("step")


def prune_checkpoints(run_dir: Path, keep: str) -> list[Path]:
    """Delete the checkpoints of ``run_dir`` that ``keep`` (``TrainConfig.keep_checkpoints``) does not keep.

    The runner calls this once a seed's result is written, not when ``fit`` returns: until the seed is
    scored, ``last`` is what an interrupted seed resumes from. Both together take tens of MB per seed
    (optimiser moments are twice the trainable weights), which a finished run rarely needs.
    Returns the folders removed.
    """
    if keep not in KEEP_CHOICES:
        raise ConfigError(f"keep_checkpoints={keep!r} is not one of {', '.join(KEEP_CHOICES)}")
    folder = Path(run_dir) / CHECKPOINT_DIR
    removed = []
    for name in ("best", "last"):
        path = folder / name
        if name != keep and path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return removed


# ----------------------------------------------------------------------------------------------- engine


_STATE_FORMAT = "rsitr-bench/train-state-v1"


@dataclass
class _Run:
    """The objects of one ``fit`` call."""

    model: nn.Module
    net: nn.Module  # what a training step calls: the model, or its compiled forward, or their DDP wrapper
    loss_fn: Callable
    loss_module: nn.Module | None
    named: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    digest: str
    state: dict[str, Any]
    acceleration: accelerate.Acceleration

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for _, p in self.named]


class Engine:
    """Trains one model for one seed of one run. See the module docstring for the contract."""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config = config
        self.ctx = ctx
        validated(config, "train")  # a config built in code has not passed the harness's checks
        self.rank, self.world_size = self._init_distributed(config, ctx)
        name = config.device if config.device != "auto" else (ctx.device or "auto")
        self.device = torch.device(resolve_device(name))
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)  # NCCL collectives run on the current device
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.seed = ctx.seed if config.seed is None else config.seed
        if config.batch_size % self.world_size:
            raise ConfigError(f"batch_size={config.batch_size} is not divisible by the world size "
                              f"{self.world_size}")
        per_rank = config.batch_size // self.world_size
        self.micro_batch_size = config.micro_batch_size or per_rank
        if per_rank % self.micro_batch_size:
            raise ConfigError(f"micro_batch_size={self.micro_batch_size} does not divide the per-rank batch "
                              f"{per_rank} (= batch_size {config.batch_size} / {self.world_size} ranks)")
        self.accumulation = per_rank // self.micro_batch_size
        self.checkpoint_dir = Path(ctx.run_dir) / CHECKPOINT_DIR
        self._rng = _RNG(self.device)

    @staticmethod
    def _init_distributed(config: TrainConfig, ctx: RunContext) -> tuple[int, int]:
        """Join the process group torchrun describes (or one set up by the caller); (0, 1) otherwise."""
        if not dist.is_available():
            return 0, 1
        if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            name = config.device if config.device != "auto" else ctx.device
            on_cuda = torch.cuda.is_available() and not str(name).startswith(("cpu", "mps"))
            dist.init_process_group(backend="nccl" if on_cuda else "gloo")
        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    # -------------------------------------------------------------------------------------------- fit

    def fit(
        self,
        model: nn.Module,
        train_loader_factory: Callable[[LoaderPlan], Iterable[Any]],
        loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor | Mapping[str, torch.Tensor]],
        evaluate_fn: Callable[[nn.Module, str], Mapping[str, float]] | None = None,
    ) -> TrainSummary:
        """Train ``config.epochs`` epochs, evaluate after each, keep the best; return the summary.

        TF32 matmuls (CUDA only) hold while training and are switched back on return, so the test split
        is scored in full float32 (:mod:`rsitr_bench.training.accelerate`).
        """
        with accelerate.float32_matmul(accelerate.use_tf32(self.device)):
            return self._fit(model, train_loader_factory, loss_fn, evaluate_fn)

    def _fit(self, model: nn.Module, train_loader_factory: Callable[[LoaderPlan], Iterable[Any]],
             loss_fn: Callable, evaluate_fn: Callable[[nn.Module, str], Mapping[str, float]] | None
             ) -> TrainSummary:
        cfg, started = self.config, time.perf_counter()
        run = self._prepare(model, loss_fn)
        steps_per_epoch = self._steps_per_epoch(train_loader_factory)
        total = cfg.epochs * steps_per_epoch
        warmup_steps = int(cfg.warmup * total)
        resumed_rng = None
        resumed_from = None
        if cfg.resume and (self.checkpoint_dir / "last" / "state.json").is_file():
            resumed_rng = self._load_last(run)
            resumed_from = run.state["global_step"]
            self.ctx.log.info("resuming from step %d (epoch %d)", resumed_from, run.state["epochs_done"] + 1)

        selected_on: Selection
        if evaluate_fn is None:
            selection, selected_on = "last epoch (no evaluation)", "none"
        elif cfg.select_on == "val":
            selection, selected_on = "val", "val"
        else:
            selection, selected_on = NON_COMPLIANT_TEST_SELECTION, "test"
            self.ctx.log.warning("select_on='test': the best epoch is chosen on the TEST split, so its "
                                 "scores are not an unbiased estimate (legacy reproduction only)")

        state = run.state
        self._clock = StageClock(self.device)
        model.train()  # and back to train mode after every evaluation (docs/mps-clip.md §9 item 18)
        board = Path(self.ctx.run_dir) / TENSORBOARD_DIR if cfg.tensorboard and self.rank == 0 else None
        with EpochScalars(board) as scalars:
            for epoch in range(state["epochs_done"], cfg.epochs):
                start = state["global_step"] - epoch * steps_per_epoch
                seed_everything(derive_seed(self.seed, epoch, self.rank))
                loader = train_loader_factory(self._plan(epoch))
                if hasattr(loader, "iter_from"):
                    micro_batches = loader.iter_from(start * self.accumulation)
                else:
                    micro_batches = iter(loader)
                    for _ in range(start * self.accumulation):  # the first run's batches and worker seeds
                        next(micro_batches)
                if resumed_rng is not None and start > 0:
                    _restore_rng(*resumed_rng)
                resumed_rng = None
                if start == 0:
                    state["epoch_losses"] = []  # checkpointed: a resumed epoch reports the same mean
                epoch_loss = self._train_epoch(run, micro_batches, epoch, steps_per_epoch, total, warmup_steps)
                state["profile"].append(self._clock.record(epoch + 1))
                self.ctx.log.info("epoch %d/%d profile: %s", epoch + 1, cfg.epochs, self._clock.summary())
                record: dict[str, Any] = {"epoch": epoch + 1, "step": state["global_step"], "loss": epoch_loss}
                message = f"epoch {epoch + 1}/{cfg.epochs}: loss {epoch_loss:.4f}"
                if evaluate_fn is not None:
                    metrics = self._evaluate(model, evaluate_fn)
                    record[cfg.select_on] = metrics
                    score = metrics[cfg.select_metric]
                    message += f", {cfg.select_on} {cfg.select_metric} {score:.3f}"
                    if state["best_score"] is None or score > state["best_score"]:
                        state.update(best_score=score, best_epoch=epoch + 1, best_metrics=metrics)
                        self._save_best(run)
                else:
                    state.update(best_epoch=epoch + 1, best_metrics={})
                    self._save_best(run)
                state["history"].append(record)
                state["epochs_done"] = epoch + 1
                self._save_last(run)
                self.ctx.log.info(message)
                scalars.log(epoch + 1, epoch_loss, cfg.lr * lr_factor(state["global_step"] - 1, total, warmup_steps),
                            cfg.select_on, record.get(cfg.select_on))

        if cfg.restore_best and state["best_epoch"] is not None:
            self._barrier()
            load_trainable(model, self.checkpoint_dir / "best" / "model.safetensors")
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        return TrainSummary(
            best_epoch=state["best_epoch"], best_score=state["best_score"],
            best_val=dict(state["best_metrics"]), selection=selection, selected_on=selected_on,
            steps=state["global_step"],
            epochs=cfg.epochs, select_metric=cfg.select_metric, trainable_params=sum(p.numel() for p in run.params),
            history=state["history"], profile=state["profile"],
            device=str(self.device), amp=amp,
            world_size=self.world_size, batch_size=cfg.batch_size, micro_batch_size=self.micro_batch_size,
            accumulation=self.accumulation, resumed_from_step=resumed_from,
            checkpoint_dir=str(self.checkpoint_dir), wall_s=time.perf_counter() - started,
            acceleration=run.acceleration.record())

    def _prepare(self, model: nn.Module, loss_fn: Callable) -> _Run:
        cfg = self.config
        model.to(self.device)
        loss_module = loss_fn if isinstance(loss_fn, nn.Module) else None
        if loss_module is not None:
            loss_module.to(self.device)
        named = [(f"model.{n}", p) for n, p in trainable_named_parameters(model)]
        if loss_module is not None:
            named += [(f"loss.{n}", p) for n, p in trainable_named_parameters(loss_module)]
        if not named:
            raise ConfigError("the model has no trainable parameters (call mark_trainable first?)")
        fast = accelerate.decide(model, self.device, self.amp_dtype, cfg.compile_backend if cfg.compile else None,
                                 [p for _, p in named])
        accelerate.prepare_model(model, fast)
        optimizer = torch.optim.AdamW(parameter_groups(named, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                      eps=cfg.eps, **accelerate.adamw_options(fast.optimizer))
        scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        net = accelerate.training_forward(model, fast)  # compiled inside DDP, so _step still sees DDP
        if self.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        state = {"global_step": 0, "epochs_done": 0, "best_score": None, "best_epoch": None,
                 "best_metrics": {}, "history": [], "epoch_losses": [], "profile": []}
        return _Run(model=model, net=net, loss_fn=loss_fn, loss_module=loss_module, named=named,
                    optimizer=optimizer, scaler=scaler, digest=frozen_digest(model), state=state,
                    acceleration=fast)

    def _plan(self, epoch: int) -> LoaderPlan:
        return LoaderPlan(epoch=epoch, micro_batch_size=self.micro_batch_size, rank=self.rank,
                          world_size=self.world_size, seed=self.seed, epochs=self.config.epochs)

    def _steps_per_epoch(self, factory: Callable[[LoaderPlan], Iterable[Any]]) -> int:
        loader = factory(self._plan(0))
        if not hasattr(loader, "__len__"):
            raise ConfigError("train_loader_factory must return a loader with __len__ (to plan the schedule)")
        steps = len(loader) // self.accumulation
        if self.world_size > 1:  # every rank must take the same number of steps
            t = torch.tensor([steps], device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            steps = int(t.item())
        if steps == 0:
            raise ConfigError(f"the training data yield {len(loader)} micro-batches per rank, fewer than the "
                              f"{self.accumulation} that one global batch of {self.config.batch_size} needs")
        return steps

    def _train_epoch(self, run: _Run, micro_batches: Iterator[Any], epoch: int, steps_per_epoch: int,
                     total: int, warmup_steps: int) -> float:
        cfg, state = self.config, run.state
        start = state["global_step"] - epoch * steps_per_epoch
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (self.ctx.progress and self.rank == 0), leave=False, dynamic_ncols=True)
        clock = self._clock
        clock.reset()
        try:
            for in_epoch in range(start, steps_per_epoch):
                step = state["global_step"]
                chunk = [move_to(next(micro_batches), self.device) for _ in range(self.accumulation)]
                clock.lap("data_wait")
                lr = cfg.lr * lr_factor(step, total, warmup_steps)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                tic = time.perf_counter()
                try:
                    terms = self._step(run, chunk)
                except torch.OutOfMemoryError as exc:
                    run.optimizer.zero_grad(set_to_none=True)
                    raise ConfigError(
                        f"{self.device} ran out of memory at micro_batch_size={self.micro_batch_size}. Set "
                        f"micro_batch_size to {max(1, self.micro_batch_size // 2)} (or lower): gradient "
                        f"accumulation keeps the global batch of {cfg.batch_size} and its exact loss."
                    ) from exc
                state["global_step"] = step + 1
                state["epoch_losses"].append(terms["loss"])
                clock.steps += 1
                bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}",
                                samples_s=f"{cfg.batch_size / (time.perf_counter() - tic):.1f}",
                                data=f"{clock.data_wait_fraction():.0%}")
                bar.update(1)
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                        and in_epoch + 1 < steps_per_epoch:  # the epoch end saves after evaluating
                    self._save_last(run)
                clock.lap("other")
        finally:
            bar.close()
        return float(np.mean(state["epoch_losses"])) if state["epoch_losses"] else float("nan")

    # ------------------------------------------------------------------------------------------- step

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _step(self, run: _Run, chunk: list[Any]) -> dict[str, float]:
        """One optimiser step over this rank's micro-batches, with exact accumulation (module docstring)."""
        net, optimizer, scaler = run.net, run.optimizer, run.scaler
        optimizer.zero_grad(set_to_none=True)
        single = len(chunk) == 1
        clock = self._clock
        if single:
            with self._autocast():
                outputs = [net(chunk[0])]
        else:
            snapshots, outputs = [], []
            with torch.no_grad():
                for micro in chunk:
                    snapshots.append(self._rng.capture())
                    with self._autocast():
                        outputs.append(net(micro))
            after = self._rng.capture()
        local = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        leaves = {k: v.detach().float().requires_grad_() if v.is_floating_point() else v.detach()
                  for k, v in local.items()}
        result = run.loss_fn({k: self._gather(v) for k, v in leaves.items()})
        terms = {"loss": result} if isinstance(result, torch.Tensor) else dict(result)
        clock.lap("forward")
        (scaler.scale(terms["loss"]) if scaler else terms["loss"]).backward()
        # DDP averages gradients over ranks; each rank holds only its slice of the full-batch gradient.
        grads = {k: v.grad * self.world_size for k, v in leaves.items() if v.grad is not None}
        if single:
            self._backward_features(outputs[0], grads, 0)
        else:
            offset = 0
            for i, micro in enumerate(chunk):
                quiet = isinstance(net, nn.parallel.DistributedDataParallel) and i < len(chunk) - 1
                with net.no_sync() if quiet else nullcontext():
                    self._rng.restore(snapshots[i])  # the same dropout masks as the first encoding
                    clock.lap("backward")
                    with self._autocast():
                        out = net(micro)
                    clock.lap("forward")  # the re-encoding with gradients counts as forward time
                    offset = self._backward_features(out, grads, offset)
            self._rng.restore(after)
        clock.lap("backward")
        if scaler:
            scaler.unscale_(optimizer)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(run.params, self.config.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        clock.lap("optimizer")
        return {k: float(v.detach()) for k, v in terms.items()}

    @staticmethod
    def _backward_features(out: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor],
                           offset: int) -> int:
        """Back-propagate the loss gradients of rows ``offset…`` into the graph that produced ``out``."""
        n = next(iter(out.values())).shape[0]
        keys = [k for k in grads if out[k].requires_grad]
        torch.autograd.backward([out[k] for k in keys],
                                [grads[k][offset:offset + n].to(out[k].dtype) for k in keys])
        return offset + n

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate a feature over ranks (rank-major); the local slice keeps its autograd identity."""
        if self.world_size == 1:
            return local
        sizes = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device))
        longest = max(int(s) for s in sizes)
        padded = local.detach()
        if local.shape[0] < longest:
            padded = torch.cat([padded, padded.new_zeros(longest - local.shape[0], *local.shape[1:])])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        parts = [p[:int(s)] for p, s in zip(parts, sizes, strict=True)]
        parts[self.rank] = local
        return torch.cat(parts)

    # -------------------------------------------------------------------------------------- evaluation

    def _evaluate(self, model: nn.Module, evaluate_fn: Callable[[nn.Module, str], Mapping[str, float]]
                  ) -> dict[str, float]:
        """Rank 0 evaluates; the others wait for its metrics (no redundant evaluation, §9 item 21)."""
        box: list[Any] = [None]
        if self.rank == 0:
            model.eval()
            try:
                with torch.no_grad():
                    box[0] = {k: float(v) for k, v in evaluate_fn(model, self.config.select_on).items()}
            finally:
                model.train()
            if self.config.select_metric not in box[0]:
                raise ConfigError(f"evaluate_fn returned no {self.config.select_metric!r} "
                                  f"(got {', '.join(sorted(box[0])) or 'nothing'}); set select_metric")
        if self.world_size > 1:
            dist.broadcast_object_list(box, src=0)
        return box[0]

    # ------------------------------------------------------------------------------------- checkpoints

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _save_best(self, run: _Run) -> None:
        if self.rank == 0:
            folder = self.checkpoint_dir / "best"
            save_trainable(run.model, folder / "model.safetensors", {"step": str(run.state["global_step"])})
            write_json_atomic(folder / "state.json", {
                "step": run.state["global_step"], "epoch": run.state["best_epoch"],
                "metrics": run.state["best_metrics"], "selection": self.config.select_on})

    def _save_last(self, run: _Run) -> None:
        """Every rank writes its RNG state; rank 0 writes weights, optimiser state and, last, state.json."""
        folder = self.checkpoint_dir / "last"
        step = str(run.state["global_step"])
        rng_tensors, rng_meta = _rng_state_tensors()
        write_bytes_atomic(folder / f"rng-{self.rank}.safetensors",
                           safetensors_bytes(rng_tensors, metadata={"step": step, **rng_meta}))
        self._barrier()
        if self.rank == 0:
            save_trainable(run.model, folder / "model.safetensors", {"step": step})
            tensors: dict[str, torch.Tensor] = {}
            scalars: dict[str, dict[str, Any]] = {}
            for idx, entry in run.optimizer.state_dict()["state"].items():
                for key, value in entry.items():
                    if torch.is_tensor(value):
                        tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                    else:
                        scalars.setdefault(str(idx), {})[key] = value
            if run.loss_module is not None:
                for n, p in trainable_named_parameters(run.loss_module):
                    tensors[f"loss.{n}"] = p.detach().cpu().contiguous()
            write_bytes_atomic(folder / "train.safetensors",
                               safetensors_bytes(tensors, metadata={"step": step}))
            write_json_atomic(folder / "state.json", {
                **run.state, "format": _STATE_FORMAT, "config": self._config_record(),
                "world_size": self.world_size, "param_names": [n for n, _ in run.named],
                "optimizer_scalars": scalars, "scaler": run.scaler.state_dict() if run.scaler else None,
                "frozen_digest": run.digest})
        self._barrier()

    def _config_record(self) -> dict[str, Any]:
        record = asdict(self.config)
        record["betas"] = list(record["betas"])
        return record

    def _load_last(self, run: _Run) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Restore weights, optimiser, scaler and progress from ``last``; return this rank's RNG state,
        which ``fit`` applies once the data iterator has been advanced to the same position."""
        folder = self.checkpoint_dir / "last"
        where = f"checkpoint {folder}"
        saved = json.loads((folder / "state.json").read_text())
        if saved.get("format") != _STATE_FORMAT:
            raise CheckpointError(f"{where} has an unknown format {saved.get('format')!r}")
        now = self._config_record()
        changed = [f"{k}: {saved['config'].get(k)!r} → {now[k]!r}" for k in now
                   if k not in _RESUME_FREE_FIELDS and saved["config"].get(k) != now[k]]
        if saved["world_size"] != self.world_size:
            changed.append(f"world_size: {saved['world_size']} → {self.world_size}")
        if changed:
            raise CheckpointError(f"{where} was written with other training settings ({'; '.join(changed)}); "
                                  f"resume with the same settings, or use a new run directory")
        names = [n for n, _ in run.named]
        if saved["param_names"] != names:
            diff = _key_diff(sorted(set(names) - set(saved["param_names"])),
                             sorted(set(saved["param_names"]) - set(names)))
            raise CheckpointError(f"{where} trained other parameters ({diff or 'same names, other order'})")
        if saved["frozen_digest"] != run.digest:
            raise CheckpointError(f"{where} was trained on other frozen weights (backbone or pretrained tag "
                                  f"changed); resume with the original backbone or use a new run directory")
        step = str(saved["global_step"])
        files = [folder / "model.safetensors", folder / "train.safetensors",
                 folder / f"rng-{self.rank}.safetensors"]
        for f in files:
            if not f.is_file() or _file_step(f) != step:
                raise CheckpointError(f"{where} is incomplete or torn: {f.name} is missing or not from "
                                      f"step {step}")
        load_trainable(run.model, files[0])
        train = load_file(str(files[1]), device="cpu")
        if run.loss_module is not None:
            with torch.no_grad():
                for n, p in trainable_named_parameters(run.loss_module):
                    p.copy_(train[f"loss.{n}"])
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in train.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, extra in saved["optimizer_scalars"].items():
            opt_state.setdefault(int(idx), {}).update(extra)
        groups = run.optimizer.state_dict()["param_groups"]
        run.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        accelerate.match_state_layouts(run.optimizer)  # moments saved contiguous; channels-last params
        if run.scaler is not None and saved.get("scaler"):
            run.scaler.load_state_dict(saved["scaler"])
        # "profile" came after the format: a checkpoint from before it resumes without earlier timings.
        run.state = {k: saved.get(k, []) if k == "profile" else saved[k] for k in run.state}
        rng_tensors = load_file(str(files[2]), device="cpu")
        with safe_open(str(files[2]), framework="pt") as fh:
            rng_meta = fh.metadata()
        return rng_tensors, rng_meta
