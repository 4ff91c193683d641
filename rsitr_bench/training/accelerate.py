"""The GPU fast path of training: every speed decision in one place, each a no-op off CUDA, all recorded.

The engine asks this module four questions when it builds a run, and stamps the answers into the training
summary (``TrainSummary.acceleration``) so that every result declares how it was computed:

* **TF32** — on CUDA, float32 matrix products may run on tensor cores in TF32 (10-bit mantissa) while
  ``fit`` trains; the previous setting is restored when ``fit`` returns, so the test split is scored in full
  float32. (cuDNN convolutions use TF32 by default in PyTorch; that default is left alone.) bf16 autocast,
  the larger win, is ``TrainConfig.amp``.
* **channels-last** — on CUDA, a *convolutional* backbone (open_clip's ModifiedResNet, timm's ConvNets) is
  converted to the NHWC memory layout, which cuDNN's tensor-core kernels want. A ViT's only convolution is its
  patch embedding (kernel = stride, no padding: a reshaped matrix product), which gains nothing.
* **fused AdamW** — one kernel for the whole update when every parameter is on CUDA and this torch has it,
  else the multi-tensor ``foreach`` update on CUDA; torch's default off CUDA (on the CPU nothing changes, so
  CPU runs stay bit-identical to earlier ones).
* **torch.compile** (``train.compile``, off by default) — the training forward only. The model itself is
  held, never replaced: checkpoints read parameter names from the model, so they do not get the
  ``_orig_mod.`` prefix of torch.compile's wrapper, and a run compiled or not resumes the other's checkpoint.
  Evaluation calls the plain model. Inductor is told to draw random numbers exactly as eager PyTorch does
  (``fallback_random``): gradient caching re-encodes each micro-batch under the RNG state of its first,
  no-grad encoding, and the two passes are two different compiled graphs, whose own random streams need not
  agree; eager's do, given the same RNG state.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from rsitr_bench.errors import ConfigError
from rsitr_bench.metrics.device import matmul_precision

OptimizerKind = Literal["fused", "foreach", "default"]


@dataclass(frozen=True)
class Acceleration:
    """What a run applied. ``amp``: the autocast dtype or ``off``; ``compile``: the backend or ``off``."""

    amp: str
    tf32: bool
    channels_last: bool
    optimizer: OptimizerKind
    compile: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ decisions


def use_tf32(device: torch.device) -> bool:
    """TF32 float32 matmuls: CUDA only (there is no TF32 on the CPU paths this project uses)."""
    return device.type == "cuda"


def _is_patch_embedding(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == conv.stride and conv.padding in ((0, 0), "valid") and conv.groups == 1


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has a 2-D convolution other than a ViT-style patch embedding."""
    return any(isinstance(m, nn.Conv2d) and not _is_patch_embedding(m) for m in model.modules())


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """NHWC weights: convolutional models on CUDA only (module docstring)."""
    return device.type == "cuda" and is_convolutional(model)


def fused_adamw_supported(device_type: str) -> bool:
    """Whether this torch has a fused AdamW kernel for ``device_type``."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return device_type in _get_fused_kernels_supported_devices()


def optimizer_kind(device: torch.device, param_device_types: Iterable[str]) -> OptimizerKind:
    """``fused`` when the run is on CUDA, every parameter is on CUDA and torch supports it; ``foreach`` on
    CUDA otherwise; ``default`` (torch's own choice) off CUDA."""
    if device.type != "cuda":
        return "default"
    types = set(param_device_types)
    return "fused" if types == {"cuda"} and fused_adamw_supported("cuda") else "foreach"


def adamw_options(kind: OptimizerKind) -> dict[str, bool]:
    """Keyword arguments of ``torch.optim.AdamW`` for ``kind``."""
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[kind]


def check_compile_backend(backend: str) -> None:
    """Refuse a ``train.compile_backend`` that torch.compile does not know, listing those it does."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(f"train.compile_backend={backend!r} is not a torch.compile backend. Known: "
                          f"{', '.join(known)} (inductor is the default; eager and aot_eager compile nothing "
                          f"and run anywhere).")


def decide(model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None, compile_backend: str | None,
           params: Iterable[nn.Parameter]) -> Acceleration:
    """All decisions for one run (the model already on ``device``); ``compile_backend`` None: no compile."""
    if compile_backend is not None:
        check_compile_backend(compile_backend)
    return Acceleration(
        amp=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off",
        tf32=use_tf32(device),
        channels_last=use_channels_last(model, device),
        optimizer=optimizer_kind(device, (p.device.type for p in params)),
        compile=compile_backend or "off",
    )


# ------------------------------------------------------------------------------------------- applying


def prepare_model(model: nn.Module, acceleration: Acceleration) -> None:
    """Apply the layout decision in place (parameter names, values and checkpoints are unchanged)."""
    if acceleration.channels_last:
        model.to(memory_format=torch.channels_last)


class CompiledForward(nn.Module):
    """``model``'s forward through ``torch.compile``; a backend that cannot compile here is a clear error.

    The engine calls this for training steps only; checkpoints and evaluation use ``model`` itself.
    """

    def __init__(self, model: nn.Module, backend: str):
        super().__init__()
        options = {"fallback_random": True} if backend == "inductor" else None
        self.compiled = torch.compile(model, backend=backend, options=options)
        self.backend = backend

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch._dynamo.exc import BackendCompilerFailed

        try:
            return self.compiled(*args, **kwargs)
        except BackendCompilerFailed as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(
                f"train.compile=true: torch.compile's {self.backend!r} backend cannot compile the model on "
                f"this machine ({first.strip()}). Inductor needs a working C++ compiler for the CPU and "
                f"Triton for CUDA. Train without it (--set train.compile=false) or pick another backend "
                f"(--set train.compile_backend=aot_eager)."
            ) from exc


def training_forward(model: nn.Module, acceleration: Acceleration) -> nn.Module:
    """What the engine calls for a training forward: the model, or its compiled forward."""
    return model if acceleration.compile == "off" else CompiledForward(model, acceleration.compile)


def float32_matmul(tf32: bool) -> AbstractContextManager[None]:
    """TF32 float32 matmuls inside the block when ``tf32`` (:func:`use_tf32`); the previous precision after."""
    return matmul_precision("high") if tf32 else nullcontext()


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every loaded optimiser moment its parameter's memory layout.

    Checkpoints store moments contiguous (NCHW); a channels-last parameter's fresh moments are channels-last,
    and fused and multi-tensor updates need the layouts of parameter, gradient and moments to agree.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
