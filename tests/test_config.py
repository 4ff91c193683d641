"""Typed configuration: YAML, dotted overrides, declared plugin defaults, and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from pydantic import Field

from rsitr_bench.errors import ConfigError, UnknownPluginError
from rsitr_bench.harness.config import (
    apply_override,
    assemble_tree,
    build_section,
    load_yaml_file,
    parse_override,
    resolve_config,
)
from rsitr_bench.harness.options import validated
from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.training.engine import TrainConfig


@dataclass
class Opts:
    lr: float = 4e-5
    epochs: int = 3
    name: str | None = None
    amp: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    mode: Literal["a", "b"] = "a"


@pytest.fixture(scope="module")
def host():
    return build_plugin_host()


def test_override_parsing_and_coercion():
    tree = {}
    for text in ["train.lr=4e-5", "train.epochs=7", "train.amp=true", "train.seeds=0,1,2", "train.mode=b"]:
        apply_override(tree, *parse_override(text))
    opts = build_section(Opts, tree["train"], "train")
    assert opts == Opts(lr=4e-5, epochs=7, amp=True, seeds=[0, 1, 2], mode="b")


def test_unknown_key_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"train\.lrr.*lr, epochs, name, amp, seeds, mode"):
        build_section(Opts, {"lrr": 1}, "train")


@pytest.mark.parametrize("key,value,expect", [
    ("epochs", "three", "expects an integer"),
    ("lr", "fast", "expects a number"),
    ("amp", "maybe", "expects true or false"),
    ("mode", "c", "not allowed"),
    ("epochs", 2.5, "expects an integer"),
])
def test_wrong_type_names_key_and_type(key, value, expect):
    with pytest.raises(ConfigError, match=rf"train\.{key}.*{expect}|{expect}.*"):
        build_section(Opts, {key: value}, "train")


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("no-equals-sign")


def test_resolve_uses_declared_plugin_defaults(host):
    config = resolve_config({"method": {"name": "global-clip", "batch_size": 8}}, host)
    assert config.dataset == "synthetic-rs"
    assert config.method_options.batch_size == 8 and config.method_options.model == "rsitr-tiny"
    assert config.train is None
    saved = config.to_dict()
    assert saved["method"]["name"] == "global-clip" and saved["eval"]["protocol"] == "instance"
    assert resolve_config(saved, host).to_dict() == saved  # the saved config rebuilds the same run


def test_resolve_errors(host):
    with pytest.raises(UnknownPluginError, match="global-clip"):
        resolve_config({"method": "nope"}, host)
    with pytest.raises(ConfigError, match="No method"):
        resolve_config({}, host)
    with pytest.raises(ConfigError, match="Unknown section 'trian'"):
        resolve_config({"method": "global-clip", "trian": {}}, host)
    with pytest.raises(ConfigError, match="not trainable"):
        resolve_config({"method": "global-clip", "train": {"lr": 1.0}}, host)
    with pytest.raises(ConfigError, match=r"method\.batch_sise"):
        resolve_config({"method": {"name": "global-clip", "batch_sise": 3}}, host)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_yaml_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML at line"):
        load_yaml_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_yaml_file(scalar)


# ------------------------------------------------------------- declared ranges and presets as data

MPS_CLIP_PRESETS = ["mps-clip", "mps-clip-as-published", "mps-clip-head", "mps-clip-leaky-protocol",
                    "mps-clip-pre-restore"]
TRAINABLE = ["full-ft", *MPS_CLIP_PRESETS]


def _resolve_with(host, method: str, *overrides: str):
    """Resolve ``--method METHOD --set ...`` the way the CLI does."""
    return resolve_config(assemble_tree(None, [(method, ["method", "name"])], list(overrides)), host)


def test_the_parametrised_lists_are_every_registered_preset_and_trainable_method(host):
    names = host.names("methods")
    assert sorted(n for n in names if n.startswith("mps-clip")) == MPS_CLIP_PRESETS
    assert sorted(n for n in names if host.get("methods", n).spec.train_options is not None) == TRAINABLE


@pytest.mark.parametrize("method", MPS_CLIP_PRESETS)
@pytest.mark.parametrize("override,allowed", [("method.variant=bogus", "'serial', 'parallel'"),
                                              ("method.loss=bogus", "'head', 'pre_restore'")])
def test_a_preset_keeps_the_choices_of_its_options(host, method, override, allowed):
    key = override.split("=")[0].split(".")[1]
    with pytest.raises(ConfigError, match=rf"Invalid method configuration: {key}='bogus': .*{allowed}"):
        _resolve_with(host, method, override)


@pytest.mark.parametrize("method", TRAINABLE)
@pytest.mark.parametrize("override,message", [("train.epochs=-2", "epochs=-2: a training run needs at least 1"),
                                              ("train.lr=-1e-4", r"lr=-0\.0001: must be positive"),
                                              ("train.batch_size=0", "batch_size=0: must be at least 1")])
def test_every_trainable_method_declares_the_training_ranges(host, method, override, message):
    with pytest.raises(ConfigError, match=f"Invalid train configuration: {message}"):
        _resolve_with(host, method, override)


@pytest.mark.parametrize("override,message", [
    ("method.temperature=0", "temperature=0.0: must be positive"),
    ("method.mpr_heads=0", "mpr_heads=0: must be at least 1"),
    ("method.max_perspectives=0", "max_perspectives=0: must be at least 1"),
    ("method.lambda_mpc=-0.5", "lambda_mpc=-0.5: must not be negative"),
    ("method.bottleneck=30", "bottleneck 30 must be a positive multiple of adapter_heads 4"),
    ("method.augment=flip", "augment='flip': not allowed; choose one of 'none', 'crop-flip', 'randaugment'"),
    ("train.warmup=1.5", r"warmup=1\.5: must be at most 1"),
    ("train.betas=0.9,1.0", r"betas\[1\]=1\.0: must be less than 1"),
    ("train.epochs=true", "epochs=True: expects an integer"),
    ("train.resume=1", "resume=1: expects true or false"),
    ("eval.ks=1,0", r"ks\[1\]=0: must be at least 1"),
])
def test_declared_ranges_name_the_key_and_the_bound(host, override, message):
    with pytest.raises(ConfigError, match=message):
        _resolve_with(host, "mps-clip", override)


def test_several_errors_are_reported_together(host):
    with pytest.raises(ConfigError, match="lr=-1.0: must be positive; batch_size=0: must be at least 1"):
        _resolve_with(host, "full-ft", "train.lr=-1", "train.batch_size=0")


HEAD = {"model": "ViT-B-32", "pretrained": "openai", "bottleneck": 128, "adapter_heads": 8, "augment": "crop-flip",
        "epoch_samples": "captions", "variant": "serial", "train_mpr": True, "loss": "head",
        "learn_temperature": False, "gallery_protocol": "compliant", "mpr_without_regions": "global"}
PRESET_VALUES = {
    "mps-clip-head": (HEAD, {"lr": 4e-5, "epochs": 35, "batch_size": 128}),
    "mps-clip-pre-restore": ({**HEAD, "pretrained": "laion2b_s34b_b79k", "variant": "parallel", "train_mpr": False,
                              "loss": "pre_restore", "learn_temperature": True, "mpr_without_regions": "zero"},
                             {"lr": 4e-4, "epochs": 35, "batch_size": 128}),
    # The published training recipe (HEAD, docs/mps-clip.md §5) with the published, leaky test protocol (§6.3).
    "mps-clip-as-published": ({**HEAD, "augment": "randaugment", "perspectives": "samgeo", "crop_mode": "masked",
                               "max_perspectives": None, "gallery_protocol": "as-published"},
                              {"lr": 4e-5, "epochs": 35, "batch_size": 128}),
    # The old meaning of mps-clip-as-published: the embedded defaults with the leaky protocol.
    "mps-clip-leaky-protocol": ({"model": "rsitr-tiny", "pretrained": "synthetic-rs", "bottleneck": 32,
                                 "max_perspectives": 3, "augment": "none", "epoch_samples": "images",
                                 "gallery_protocol": "as-published"}, {"lr": 3e-4, "epochs": 5}),
}


@pytest.mark.parametrize("method", sorted(PRESET_VALUES))
def test_preset_defaults_are_the_published_values(host, method):
    options, train = PRESET_VALUES[method]
    config = resolve_config({"method": method}, host)
    assert {k: getattr(config.method_options, k) for k in options} == options
    assert {k: getattr(config.train, k) for k in train} == train
    assert type(config.method_options) is type(resolve_config({"method": "mps-clip"}, host).method_options)


@pytest.mark.parametrize("method", MPS_CLIP_PRESETS)
@pytest.mark.parametrize("protocol", ["compliant", "as-published"])
def test_the_gallery_protocol_composes_with_every_preset(host, method, protocol):
    config = _resolve_with(host, method, f"method.gallery_protocol={protocol}")
    spec = host.get("methods", method).spec
    assert config.method_options.gallery_protocol == protocol
    assert spec.reads_gallery_captions(config.method_options) is (protocol == "as-published")
    # Everything else stays the preset's.
    plain = resolve_config({"method": method}, host).method_options
    assert {**vars(plain), "gallery_protocol": protocol} == vars(config.method_options)


def test_max_perspectives_null_means_uncapped(host):
    assert _resolve_with(host, "mps-clip", "method.max_perspectives=null").method_options.max_perspectives is None


def test_user_values_override_a_preset_and_the_saved_config_rebuilds_it(host):
    config = _resolve_with(host, "mps-clip-pre-restore", "method.variant=serial", "train.lr=1e-3")
    assert (config.method_options.variant, config.train.lr, config.method_options.loss) == ("serial", 1e-3,
                                                                                            "pre_restore")
    assert resolve_config(config.to_dict(), host).to_dict() == config.to_dict()


def test_options_built_in_code_are_checked_by_validated():
    with pytest.raises(ConfigError, match="Invalid train configuration: epochs=0"):
        validated(TrainConfig(epochs=0), "train")
    assert validated(TrainConfig(betas=[0.5, 0.6]), "train").betas == (0.5, 0.6)


@dataclass
class Inner:
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    label: str = "x"


def test_nested_options_are_checked_key_by_key():
    assert build_section(Outer, {"inner": {"threshold": "0.25"}, "label": 2017}, "perspectives") == \
        Outer(Inner(0.25), "2017")
    with pytest.raises(ConfigError, match=r"Unknown key perspectives\.inner\.treshold\. .*'perspectives\.inner': "
                                          r"threshold"):
        build_section(Outer, {"inner": {"treshold": 1}}, "perspectives")
    with pytest.raises(ConfigError, match=r"inner\.threshold=2\.0: must be at most 1"):
        build_section(Outer, {"inner": {"threshold": 2}}, "perspectives")


def test_a_section_that_is_not_a_mapping_is_refused(host):
    with pytest.raises(ConfigError, match="Section 'train' must be a mapping of options"):
        resolve_config({"method": "mps-clip", "train": "fast"}, host)
