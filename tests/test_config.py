"""Typed configuration: YAML, dotted overrides, declared plugin defaults, and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rsitr_bench.config import apply_override, build_section, load_yaml_file, parse_override, resolve_config
from rsitr_bench.errors import ConfigError, UnknownPluginError
from rsitr_bench.plugins import build_plugin_host


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
