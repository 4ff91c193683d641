"""Strict loading of the MPS-CLIP reference implementation's checkpoints into rsitr-bench's ``MpsClip``.

Why a loader of its own: the reference (Lcrucial1f/MPS-CLIP) saves ``torch.save({"model": state_dict,
"config": dict})`` with its own module names, and it loads with ``strict=False``, so a file of the wrong layout
silently leaves adapters at their initialisation (docs/mps-clip.md §9 item 3). Two layouts exist:

* ``pre-restore`` (755 tensors; the released hub checkpoints): the parallel adapter, our ``variant="parallel"``;
* ``head`` (895 tensors; the reference at HEAD 694ea6f): the serial adapter, our ``variant="serial"``.

The layout is recognised by its module names (``g2adapter.img_proj_down`` / ``mv_img_head`` against
``g2adapter.down_proj`` / ``mpr_head``), not by the tensor count, and every key is accounted for: the expected
reference key set is derived from the model we build, and a missing or unexpected key is an error that lists
it under its reference name. What happens to each tensor:

* ``model.*`` (the CLIP, ``logit_scale`` included) → ``clip.*`` unchanged; ``exp(logit_scale)`` is the MPC
  scale when training continues. The pre-restore block gates ``….resblocks.<i>.gate1`` → ``….mlp.g2a.gate``.
* adapter weights → the G²A modules, renamed by the tables below; ``mv_img_head`` / ``mpr_head`` → ``mpr``.
* ``….pos_enc.pe`` (persistent 10000-row sinusoid tables) → compared with :func:`sinusoidal_positions` on
  the rows the tower uses, then dropped: ours are computed, not stored (docs/mps-clip.md §9 item 14). A wrong
  table is refused.
* ``temp`` → ``temperature`` (the base contrastive τ; it is trained in pre-restore, so the tensor, not the
  config's ``temp1``, is the value the reference would continue with).
* ``s_*`` (pre-restore uncertainty scalars) → loss weights ``½·e^{-s}``: ``s_mv_contr`` / ``s_mv_trip`` give
  ``lambda_mpc`` / ``lambda_mpt``; the base weights stay the ``pre_restore`` combination's ½, and a
  difference to ``½·e^{-s_base_*}`` is reported in ``notes`` (the released files keep every s at 0).

Options needed to reproduce the reference numerically are set, never left to the user, and listed in
:attr:`ReferenceCheckpointInfo.overrides`: the doubled GA residual, the MPR input of images without
sub-images (pre-restore feeds the zero vector, HEAD substitutes g), the towers' activation (QuickGELU for
HEAD and pre-restore ``"model": "geo"``, exact GELU for pre-restore ``"vit"``), τ and the loss weighting.
Architecture options that contradict the checkpoint (variant, MPR heads, adapter width) are refused.

Files are read without running pickled code: ``torch.load(weights_only=True)``, memory-mapped, or a
``.safetensors`` file whose config is a JSON string in its metadata (key ``config``) or in a sidecar ``.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch
from torch import nn

from rsitr_bench.clip.backbones import (
    Backbone,
    load_state_dict_strict,
    quiet_random_init_warning,
    register_model_configs,
)
from rsitr_bench.errors import CheckpointError
from rsitr_bench.harness.hub import file_digest
from rsitr_bench.methods.mps_clip.adapter import GatedGlobalAttention, sinusoidal_positions

if TYPE_CHECKING:
    from rsitr_bench.methods.mps_clip.method import MpsClipOptions

#: Attention heads inside the reference adapters: not recoverable from weight shapes, fixed in its code.
REFERENCE_ADAPTER_HEADS = 8
#: Largest difference accepted between a stored ``pe`` row and ours: a frequency computed with float32 ``exp``
#: on another device may differ by one ulp, which moves row p by up to p·2⁻²⁴ (< 5e-6 at the 77 text rows);
#: a wrong table differs by O(1).
PE_ATOL = 1e-5
_SHOW = 8

_BLOCK = r"(?P<b>(?:visual\.)?transformer\.resblocks\.\d+\.)"
_REST = r"(?P<r>.+)"
#: GA sub-module names: reference suffix → ours (``GatedGlobalAttention``).
_GA = (("attn.pos_enc.pe", "pe"), ("attn.attn_in_norm.", "norm_attn."), ("attn.attn.", "attn."),
       ("attn.norm.", "norm_out."), ("mlp.fc1.conv.", "ffn_in."), ("mlp.dwconv.", "ffn_dw."),
       ("mlp.fc2.conv.", "ffn_out."))


def _ga(ref_prefix: str, our_prefix: str) -> list[tuple[str, str]]:
    return [(ref_prefix + r + ("{r}" if r.endswith(".") else ""), our_prefix + o + ("{r}" if o.endswith(".") else ""))
            for r, o in _GA]


#: Renaming rules per layout, reference template → ours; the first match wins. ``{b}`` is a block prefix
#: (``[visual.]transformer.resblocks.<i>.``), ``{r}`` the rest of the key.
_RULES: dict[str, list[tuple[str, str]]] = {
    "pre-restore": [
        ("model.{b}gate1", "clip.{b}mlp.g2a.gate"),
        ("model.{b}g2adapter.img_proj_down.{r}", "clip.{b}mlp.g2a.down.{r}"),
        ("model.{b}g2adapter.img_proj_up.{r}", "clip.{b}mlp.g2a.up.{r}"),
        ("model.{b}g2adapter.multihead_attention.{r}", "clip.{b}mlp.g2a.attn.{r}"),
        ("model.{b}g2adapter.BiShareAdapterxx.gate1", "clip.{b}mlp.g2a.ga_gate"),
        ("model.{b}g2adapter.BiShareAdapterxx.l1.{r}", "clip.{b}mlp.g2a.ga_in.{r}"),
        ("model.{b}g2adapter.BiShareAdapterxx.l2.{r}", "clip.{b}mlp.g2a.ga_out.{r}"),
        *_ga("model.{b}g2adapter.BiShareAdapterxx.ga.", "clip.{b}mlp.g2a.ga."),
        ("model.{r}", "clip.{r}"),
        ("mv_img_head.{r}", "mpr.{r}"),
    ],
    "head": [
        ("model.{b}g2adapter.down_proj.{r}", "clip.{b}g2a.down.{r}"),
        ("model.{b}g2adapter.self_attention.{r}", "clip.{b}g2a.attn.{r}"),
        ("model.{b}g2adapter.attention_proj.{r}", "clip.{b}g2a.attn_proj.{r}"),
        ("model.{b}g2adapter.gate", "clip.{b}g2a.gate"),
        ("model.{b}g2adapter.up_proj.{r}", "clip.{b}g2a.up.{r}"),
        *_ga("model.{b}g2adapter.global_attention.", "clip.{b}g2a.ga."),
        ("model.{r}", "clip.{r}"),
        ("mpr_head.{r}", "mpr.{r}"),
    ],
}

#: Module names that identify each layout (any one suffices; a key of each is an error).
_MARKERS = {"pre-restore": (".g2adapter.img_proj_down.", "mv_img_head."),
            "head": (".g2adapter.down_proj.", "mpr_head.")}
_VARIANT = {"pre-restore": "parallel", "head": "serial"}
_PRESET = {"pre-restore": "mps-clip-pre-restore", "head": "mps-clip-head"}
#: Top-level tensors that are not module weights; see the module docstring for where each goes.
_SCALARS = {"pre-restore": ("temp", "s_base_contr", "s_mv_contr", "s_base_trip", "s_mv_trip"), "head": ("temp",)}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{b\}|\{r\})", template)
    return re.compile("".join(_BLOCK if p == "{b}" else _REST if p == "{r}" else re.escape(p) for p in parts) + "$")


def _fill(template: str, match: re.Match[str]) -> str:
    groups = match.groupdict()
    return template.replace("{b}", groups.get("b") or "").replace("{r}", groups.get("r") or "")


@functools.cache
def _compiled(layout: str) -> tuple[tuple[re.Pattern[str], str, re.Pattern[str], str], ...]:
    return tuple((_compile(ref), ours, _compile(ours), ref) for ref, ours in _RULES[layout])


def to_ours(layout: str, key: str) -> str | None:
    """Our name of a reference key (``None`` for the top-level scalars and for keys no rule covers)."""
    for ref_re, ours, _, _ in _compiled(layout):
        if m := ref_re.match(key):
            return _fill(ours, m)
    return None


def to_reference(layout: str, key: str) -> str:
    """The reference name of one of our keys (inverse of :func:`to_ours`)."""
    for _, _, our_re, ref in _compiled(layout):
        if m := our_re.match(key):
            return _fill(ref, m)
    return key


@dataclass(frozen=True)
class ReferenceCheckpointInfo:
    """What a reference checkpoint is and what loading it implies for the options.

    Attributes:
        path: the file.
        layout: ``pre-restore`` or ``head``. variant: our adapter variant for it (``parallel`` / ``serial``).
        tensor_count, numel: entries and scalars in its state dict.
        quick_gelu: whether the CLIP towers use QuickGELU (else exact GELU).
        overrides: option name → the value the checkpoint requires or implies (applied when loading).
        config_mapping: config key → what it became.
        unused_config: config keys with no counterpart here (training paths, optimiser, ...).
        notes: differences worth knowing that do not prevent loading.
    """

    path: str
    layout: str
    variant: str
    tensor_count: int
    numel: int
    quick_gelu: bool
    overrides: dict[str, Any]
    config_mapping: dict[str, str]
    unused_config: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ReferenceCheckpoint:
    """A read reference checkpoint: its description, its raw (memory-mapped) tensors and its provenance.

    ``source`` is where the file came from (a hub URI, a URL or the local path) and ``sha256`` its digest, for
    run provenance; both are taken from the caller when it fetched the file, else from the file itself.
    """

    info: ReferenceCheckpointInfo
    state: dict[str, torch.Tensor] = field(repr=False)
    source: str = ""
    known_sha256: str | None = None

    @functools.cached_property
    def sha256(self) -> str:
        return self.known_sha256 or file_digest(Path(self.info.path))

    def clip_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain CLIP weights (no adapter, gate, MPR or scalar), under open_clip's names."""
        out = {}
        for key, tensor in self.state.items():
            ours = to_ours(self.info.layout, key)
            if ours is not None and ours.startswith("clip.") and ".g2a." not in ours and ".g2adapter." not in key:
                out[ours[len("clip."):]] = tensor
        return out

    def require_keys(self, expected: set[str], present: set[str], what: str) -> None:
        """Refuse unless ``present`` equals ``expected`` (reference names); the error lists the difference."""
        missing, unexpected = sorted(expected - present), sorted(present - expected)
        if missing or unexpected:
            parts = [_keys_listing(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected))
                     if keys]
            raise CheckpointError(
                f"Checkpoint {self.info.path} ({self.info.layout} layout) does not match {what}: {'; '.join(parts)}. "
                f"The file is incomplete or was modified, or method.model is not the architecture it was trained "
                f"with (the reference is ViT-B-32).")


# ------------------------------------------------------------------------------------------------ reading

_CONVERT_HINT = (
    "To convert it, load it once on a machine where you trust the file and re-save plain data, e.g. "
    "`python -c \"import json, torch; c = torch.load('IN.pth', map_location='cpu', weights_only=False); "
    "torch.save({'model': c['model'], 'config': json.loads(json.dumps(c['config'], default=str))}, "
    "'OUT.pth')\"`, or save the state dict with safetensors.torch.save_file and the config as JSON in its "
    "metadata under 'config'.")


def _read_torch(path: Path) -> Any:
    try:
        # Memory-mapped when the file is a zip archive (torch.save's format): reading the keys of a 700 MB
        # file then costs nothing, and tensors are paged in only when copied into the model.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).split("\n\n")[0].splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint {path} needs code execution to unpickle ({first}), and rsitr-bench never runs pickled "
            f"code. Released MPS-CLIP files whose 'config' is a ruamel.yaml CommentedMap are the usual cause. "
            + _CONVERT_HINT) from None
    except Exception as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}. The file "
            f"is damaged or incomplete (e.g. an interrupted download) or not a torch/safetensors file: fetch it "
            f"again and compare its sha256 with the published one.") from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"Could not read {path} as safetensors: {exc}. The file is damaged or incomplete: "
                              f"fetch or convert it again.") from None
    sidecar = path.with_suffix(".json")
    text = meta.get("config") or (sidecar.read_text() if sidecar.is_file() else None)
    try:
        config = json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"The config of {path} (metadata 'config' or {sidecar.name}) is not valid JSON: "
                              f"{exc}.") from None
    return {"model": state, "config": config}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and config of a checkpoint file, read safely (see the module docstring)."""
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist. Check method.checkpoint.")
    obj = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict or a "
                              f"{{'model': state_dict, 'config': dict}} mapping. Re-save it as one of those.")
    state, config = (obj["model"], obj.get("config")) if isinstance(obj.get("model"), Mapping) else (obj, None)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {path} has non-tensor entries in its state dict "
                              f"({', '.join(map(str, bad[:_SHOW]))}); re-save it with tensors only.")
    if config is not None and not isinstance(config, Mapping):
        raise CheckpointError(f"The 'config' of checkpoint {path} is a {type(config).__name__}, not a mapping. "
                              + _CONVERT_HINT)
    return dict(state), dict(config or {})


def _layout(path: Path, keys: Iterable[str]) -> str | None:
    def marks(key: str, marker: str) -> bool:  # ".x." anywhere inside a key; "x." as its top-level module
        return marker in key if marker.startswith(".") else key.startswith(marker)

    found = {name: sorted(k for k in keys if any(marks(k, m) for m in markers)) for name, markers in _MARKERS.items()}
    present = [name for name, hits in found.items() if hits]
    if len(present) > 1:
        raise CheckpointError(
            f"Checkpoint {path} mixes the MPS-CLIP reference layouts: it has pre-restore keys "
            f"({found['pre-restore'][0]}, ...) and HEAD keys ({found['head'][0]}, ...). It is not a checkpoint "
            f"the reference wrote; re-export it from one model.")
    return present[0] if present else None


# ------------------------------------------------------------------------------------------- description

def _head_structure(state: Mapping[str, torch.Tensor], layout: str) -> tuple[int, bool]:
    prefix = "mv_img_head.heads." if layout == "pre-restore" else "mpr_head.heads."
    heads = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}
    mlp = any(k.startswith(prefix) and k[len(prefix):].split(".")[1] == "2" for k in state)
    return len(heads), mlp


def _describe(path: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], layout: str
              ) -> ReferenceCheckpointInfo:
    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"Checkpoint {path} ({layout} layout): {message}")

    mapping: dict[str, str] = {}
    notes: list[str] = []
    heads, mlp = _head_structure(state, layout)
    for key, value, what in (("mv_k", heads, "MPR heads"), ("mv_mlp", mlp, "two-layer MPR heads")):
        if key in config and config[key] != value:
            raise fail(f"its config says {key}={config[key]!r} but its weights hold {what} = {value!r}.")
    mapping.update(mv_k=f"mpr_heads={heads}", mv_mlp=f"mpr_mlp={mlp}")
    if config.get("use_multi_view", True) is not True:
        raise fail("its config says use_multi_view is off, but MPS-CLIP here always has the MPR.")
    mapping["use_multi_view"] = "checked: the MPR is present"
    down = next((t for k, t in state.items() if k.endswith(_MARKERS[layout][0] + "weight")), None)
    if down is None:
        raise fail("it has no adapter down-projection weight. " + _MISSING_HINT)
    bottleneck = int(down.shape[0])

    text_projection, conv1 = state.get("model.text_projection"), state.get("model.visual.conv1.weight")
    vis_pos = state.get("model.visual.positional_embedding")
    if text_projection is None or conv1 is None or vis_pos is None:
        raise fail("it lacks the CLIP's projection, patch embedding or positions. " + _MISSING_HINT)
    patch = int(conv1.shape[-1])
    checks = {"embed_dim": (int(text_projection.shape[-1]), "model.text_projection"),
              "patch_size": (patch, "model.visual.conv1"),
              "image_res": (patch * math.isqrt(int(vis_pos.shape[0]) - 1), "model.visual.positional_embedding")}
    for key, (value, source) in checks.items():
        if key in config and config[key] != value:
            raise fail(f"its config says {key}={config[key]!r} but {source} implies {value}.")
    mapping.update({key: f"checked against {source}" for key, (_, source) in checks.items()})

    if layout == "head":
        quick_gelu = True
        mapping["model"] = "ignored for the activation: HEAD always builds the CLIP with QuickGELU"
    else:
        backbone = config.get("model")
        if backbone not in ("geo", "vit"):
            raise fail(f"its config has model={backbone!r}, but the towers' activation depends on it ('geo': "
                       f"QuickGELU, 'vit': exact GELU). Add the training config's 'model' value to the file's "
                       f"config.")
        quick_gelu = backbone == "geo"
        mapping["model"] = f"{backbone} → {'QuickGELU' if quick_gelu else 'exact GELU'} in the CLIP towers"

    if "temp" not in state:
        raise fail("it has no 'temp' tensor, which every reference checkpoint holds. " + _MISSING_HINT)
    temperature = float(state["temp"])
    if "temp1" in config:
        mapping["temp1"] = "initial τ; the stored 'temp' tensor is used"
        if not math.isclose(float(config["temp1"]), temperature, rel_tol=1e-6):
            notes.append(f"temperature: temp tensor {temperature:.6g} (trained) differs from config temp1 "
                         f"{config['temp1']}; the tensor is used")
    overrides: dict[str, Any] = {
        "variant": _VARIANT[layout], "mpr_heads": heads, "mpr_mlp": mlp, "bottleneck": bottleneck,
        "ga_double_residual": True,
        "mpr_without_regions": "zero" if layout == "pre-restore" else "global",
        "temperature": temperature, "learn_temperature": layout == "pre-restore",
        "loss": "pre_restore" if layout == "pre-restore" else "head",
    }
    if layout == "pre-restore":
        s = {}
        for name in _SCALARS["pre-restore"][1:]:
            if name not in state:
                raise fail(f"it has no {name!r} tensor. " + _MISSING_HINT)
            s[name] = float(state[name].reshape(-1)[0])
        overrides["lambda_mpc"] = 0.5 * math.exp(-s["s_mv_contr"])
        overrides["lambda_mpt"] = 0.5 * math.exp(-s["s_mv_trip"])
        base = {n: 0.5 * math.exp(-s[n]) for n in ("s_base_contr", "s_base_trip")}
        if any(abs(w - 0.5) > 1e-6 for w in base.values()):
            notes.append("loss: the base-term weights ½·e^(-s) implied by " + ", ".join(
                f"{n}={s[n]:.4g} → {w:.4g}" for n, w in base.items()) + " are not options here; training "
                "would use ½ for both")
    else:
        for key in ("lambda_mpc", "lambda_mpt"):
            if key in config:
                overrides[key] = float(config[key])
                mapping[key] = f"{key}={float(config[key])}"
    mapping = {k: v for k, v in mapping.items() if k in config}
    return ReferenceCheckpointInfo(
        path=str(path), layout=layout, variant=_VARIANT[layout], tensor_count=len(state),
        numel=sum(t.numel() for t in state.values()), quick_gelu=quick_gelu, overrides=overrides,
        config_mapping=mapping, unused_config=tuple(sorted(k for k in config if k not in mapping)),
        notes=tuple(notes))


_MISSING_HINT = "The file is incomplete or was not written by the reference; fetch it again."


def read_reference_checkpoint(path: str | Path, *, source: str | None = None, sha256: str | None = None
                              ) -> ReferenceCheckpoint | None:
    """Read the local file ``path``; ``None`` when it is a readable state dict of another kind (a plain CLIP).

    ``source`` and ``sha256`` describe where a fetched file came from (recorded in provenance).

    Raises :class:`CheckpointError` for an unreadable or unsafe file and for a reference checkpoint whose
    config contradicts its weights.
    """
    path = Path(path).expanduser()
    state, config = _read(path)
    layout = _layout(path, state)
    if layout is None:
        return None
    return ReferenceCheckpoint(_describe(path, state, config, layout), state, source or str(path.resolve()), sha256)


def describe_reference_checkpoint(path: str | Path) -> ReferenceCheckpointInfo:
    """Layout, variant, counts and config mapping of a reference checkpoint (for ``checkpoint inspect``)."""
    reference = read_reference_checkpoint(path)
    if reference is None:
        raise CheckpointError(f"{path} is not an MPS-CLIP reference checkpoint: none of its keys has the "
                              f"reference's adapter or MPR module names (g2adapter, mv_img_head, mpr_head).")
    return reference.info


# --------------------------------------------------------------------------------------------- applying

def options_for_checkpoint(options: MpsClipOptions, info: ReferenceCheckpointInfo) -> MpsClipOptions:
    """``options`` with the checkpoint's overrides applied; a contradicting architecture option is refused.

    The architecture (variant, MPR heads and MLP, adapter width and heads) must already match, because it is what a
    preset or the user chose: silently changing it would score a different method than the one named. Every
    other override reproduces the reference and is applied.
    """
    fixed = {"variant": info.variant, "mpr_heads": info.overrides["mpr_heads"],
             "mpr_mlp": info.overrides["mpr_mlp"], "bottleneck": info.overrides["bottleneck"],
             "adapter_heads": REFERENCE_ADAPTER_HEADS}
    wrong = [f"{k}={getattr(options, k)!r} (the checkpoint needs {v!r})" for k, v in fixed.items()
             if getattr(options, k) != v]
    if wrong:
        raise CheckpointError(
            f"Checkpoint {info.path} is an MPS-CLIP reference checkpoint of the {info.layout} layout, which "
            f"contradicts the method options: {'; '.join(wrong)}. Use --method {_PRESET[info.layout]}, or set "
            f"those options to the values the checkpoint needs.")
    return dataclasses.replace(options, **{k: v for k, v in info.overrides.items() if k not in fixed})


def reference_backbone(model_name: str, reference: ReferenceCheckpoint) -> Backbone:
    """An open_clip ``model_name`` CLIP with the activation the checkpoint needs and its (frozen) CLIP weights.

    Nothing is downloaded: the reference file holds the whole CLIP.
    """
    register_model_configs()
    info = reference.info
    with quiet_random_init_warning():
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, force_quick_gelu=info.quick_gelu, device="cpu")
    clip_state = reference.clip_state_dict()
    reference.require_keys({to_reference(info.layout, "clip." + k) for k in model.state_dict()},
                           {to_reference(info.layout, "clip." + k) for k in clip_state}, f"the {model_name} CLIP")
    load_state_dict_strict(model, clip_state, source=f"{info.path} (CLIP part)")
    model.eval()
    size = model.visual.image_size
    return Backbone(model, preprocess, open_clip.get_tokenizer(model_name),
                    f"{model_name}|quick_gelu={info.quick_gelu}|mps-clip-{info.layout}|sha256={reference.sha256}",
                    size[0] if isinstance(size, tuple) else int(size),
                    weights_source=reference.source, weights_sha256=reference.sha256)


def _keys_listing(label: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return f"{len(keys)} {label}: {', '.join(keys[:_SHOW])}{more}"


def load_reference_weights(net: nn.Module, reference: ReferenceCheckpoint) -> None:
    """Load every tensor of ``reference`` into ``net`` (an ``MpsClipNet`` of the checkpoint's architecture).

    The reference key set expected from ``net`` must equal the file's exactly (errors list the offending keys
    under their reference names); ``pe`` tables are checked then dropped; the scalars were consumed by
    :func:`options_for_checkpoint`; the rest goes through :func:`load_state_dict_strict`, which checks shapes.
    """
    info, layout = reference.info, reference.info.layout
    ga_widths = {f"{name}.pe": module.norm_attn.normalized_shape[0] for name, module in net.named_modules()
                 if isinstance(module, GatedGlobalAttention)}
    ours_expected = set(net.state_dict()) | set(ga_widths)
    reference.require_keys({to_reference(layout, k) for k in ours_expected} | set(_SCALARS[layout]),
                           set(reference.state), f"the {info.variant} MPS-CLIP built from the options")
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in reference.state.items():
        ours = to_ours(layout, key)
        if ours is None:
            continue  # a top-level scalar, consumed by options_for_checkpoint
        if ours in ga_widths:
            _check_pe(info, key, tensor, ga_widths[ours], _tower_length(net, ours))
        else:
            mapped[ours] = tensor
    load_state_dict_strict(net, mapped, source=info.path)


def _tower_length(net: nn.Module, key: str) -> int:
    """Sequence length of the tower an adapter key belongs to (tokens of the text context or image grid)."""
    clip = net.clip
    table = clip.visual.positional_embedding if key.startswith("clip.visual.") else clip.positional_embedding
    return int(table.shape[0])


def _check_pe(info: ReferenceCheckpointInfo, key: str, table: torch.Tensor, width: int, length: int) -> None:
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] < length or table.shape[2] != width:
        raise CheckpointError(f"Checkpoint {info.path}: {key} has shape {tuple(table.shape)}, expected "
                              f"[1, ≥{length}, {width}].")
    ours = sinusoidal_positions(length, width)
    diff = float((table[0, :length].float() - ours).abs().max())
    if diff > PE_ATOL:
        raise CheckpointError(
            f"Checkpoint {info.path}: the sinusoidal table {key} differs from the standard sine/cosine encoding "
            f"by up to {diff:.3g} on the first {length} rows (tolerance {PE_ATOL}); the file is corrupt or was not "
            f"written by the reference. Fetch it again.")
