"""The plugin host: hook specs, entry-point loading, isolation of broken plugins, kill switch, block list."""

from __future__ import annotations

import inspect
import types

import pytest

from rsitr_bench import hookimpl, hookspecs
from rsitr_bench.api import PLUGIN_KINDS, MethodSpec
from rsitr_bench.errors import UnknownPluginError
from rsitr_bench.harness.plugins import AUTOLOAD_ENV, build_plugin_host
from tests.helpers import make_distribution, run_cli


def _method_plugin(name: str) -> types.SimpleNamespace:
    @hookimpl
    def rsitr_register_methods():
        return [MethodSpec(name=name, factory=object, description="test method")]

    return types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)


def test_every_hook_is_documented():
    hooks = [f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("rsitr_")]
    assert {h.__name__ for h in hooks} == {
        "rsitr_register_datasets", "rsitr_register_keyword_providers",
        "rsitr_register_perspective_generators", "rsitr_register_methods", "rsitr_run_finished"}
    for hook in hooks:
        doc = inspect.getdoc(hook)
        assert doc and "Called" in doc and ("Return" in doc or "Arguments" in doc), hook.__name__


def test_builtins_load_through_the_entry_point_group():
    host = build_plugin_host()
    own = {p.name for p in host.plugins if p.distribution == "rsitr-bench"}
    assert {"datasets", "methods"} <= own
    assert "global-clip" in host.names("methods")
    assert "synthetic-rs" in host.names("datasets")
    assert host.get("methods", "global-clip").plugin.distribution == "rsitr-bench"
    assert set(host.tables) == set(PLUGIN_KINDS)


def test_unknown_name_lists_known_ones():
    host = build_plugin_host()
    with pytest.raises(UnknownPluginError, match="global-clip"):
        host.get("methods", "no-such-method")


def test_extra_plugin_registers_and_duplicate_names_are_reported():
    host = build_plugin_host(extra_plugins=[("first", _method_plugin("dup")), ("second", _method_plugin("dup"))])
    assert host.get("methods", "dup").plugin.name == "first"
    assert any(f.name == "second" and "already registered" in f.error for f in host.failures)


def test_plugin_whose_registration_raises_is_skipped():
    @hookimpl
    def rsitr_register_methods():
        raise RuntimeError("boom at registration")

    bad = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("bad", bad), ("good", _method_plugin("fine"))])
    assert "fine" in host.names("methods")
    failure = next(f for f in host.failures if f.name == "bad")
    assert "boom at registration" in failure.error and failure.stage == "rsitr_register_methods"


def test_plugin_returning_garbage_is_skipped():
    @hookimpl
    def rsitr_register_methods():
        return ["not a spec"]

    garbage = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("garbage", garbage)])
    assert any(f.name == "garbage" and "expected a MethodSpec" in f.error for f in host.failures)


def test_block_list_drops_a_plugin():
    host = build_plugin_host(blocked=["methods"])
    assert "global-clip" not in host.names("methods")
    assert "synthetic-rs" in host.names("datasets")


def test_blocking_an_unknown_plugin_lists_the_known_ones():
    with pytest.raises(UnknownPluginError, match=r"Unknown plugin 'nope'.*datasets.*methods"):
        build_plugin_host(blocked=["nope"])


def test_run_finished_hook_errors_are_collected_not_raised():
    calls = []

    @hookimpl
    def rsitr_run_finished(run):
        calls.append(run["id"])

    @hookimpl(specname="rsitr_run_finished")
    def failing(run):
        raise ValueError("tracker down")

    host = build_plugin_host(extra_plugins=[("ok", types.SimpleNamespace(rsitr_run_finished=rsitr_run_finished)),
                                            ("bad", types.SimpleNamespace(failing=failing))])
    errors = host.notify_run_finished({"id": "r1"})
    assert calls == ["r1"] and len(errors) == 1 and "tracker down" in errors[0]


BROKEN = "raise ImportError('this plugin is broken on purpose')\n"
GOOD = """
from rsitr_bench import hookimpl
from rsitr_bench.api import MethodSpec

@hookimpl
def rsitr_register_methods():
    return [MethodSpec(name="third-party-method", factory=object, description="from a fake distribution")]
"""


@pytest.mark.slow
def test_broken_third_party_plugin_is_reported_and_cli_still_works(tmp_path):
    site = make_distribution(tmp_path / "site", "broken-dist", "broken_plugin", BROKEN)
    make_distribution(site, "good-dist", "good_plugin", GOOD)
    result = run_cli("list", "plugins", extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "broken_plugin" in result.stderr and "broken-dist" in result.stderr
    assert "broken on purpose" in result.stderr
    assert "good-dist" in result.stdout and "rsitr-bench" in result.stdout

    methods = run_cli("list", "methods", extra_path=site)
    assert "third-party-method" in methods.stdout and "global-clip" in methods.stdout

    blocked = run_cli("list", "methods", "--no-plugin", "good_plugin", extra_path=site)
    assert "third-party-method" not in blocked.stdout

    off = run_cli("list", "methods", extra_path=site, env={AUTOLOAD_ENV: "1"})
    assert off.returncode == 0
    assert "third-party-method" not in off.stdout and "broken" not in off.stderr
    assert "global-clip" in off.stdout


def test_hooks_are_dispatched_by_pluggy_so_tryfirst_decides_among_third_party_plugins():
    @hookimpl(tryfirst=True)
    def rsitr_register_methods():
        return [MethodSpec(name="dup", factory=object, description="eager")]

    eager = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("first", _method_plugin("dup")), ("eager", eager)])
    assert host.get("methods", "dup").plugin.name == "eager"
    assert any(f.name == "first" and "already registered" in f.error for f in host.failures)


def test_a_tryfirst_plugin_cannot_shadow_a_builtin_name():
    @hookimpl(tryfirst=True)
    def rsitr_register_methods():
        return [MethodSpec(name="global-clip", factory=object)]

    shadow = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("shadow", shadow)])
    assert host.get("methods", "global-clip").plugin.distribution == "rsitr-bench"
    assert any(f.name == "shadow" for f in host.failures)


def test_hook_wrappers_see_every_plugins_registrations():
    seen = []

    @hookimpl(wrapper=True)
    def rsitr_register_methods():
        results = yield
        seen.extend(spec.name for specs in results for spec in specs)
        return results

    watcher = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("watcher", watcher), ("extra", _method_plugin("extra-method"))])
    assert {"extra-method", "global-clip"} <= set(seen)
    assert "extra-method" in host.names("methods")


def test_a_raising_hook_wrapper_is_reported_and_the_registrations_survive():
    @hookimpl(wrapper=True)
    def rsitr_register_methods():
        yield
        raise RuntimeError("wrapper broke")

    broken = types.SimpleNamespace(rsitr_register_methods=rsitr_register_methods)
    host = build_plugin_host(extra_plugins=[("broken", broken)])
    assert "global-clip" in host.names("methods")
    assert any(f.name == "broken" and "wrapper broke" in f.error for f in host.failures)
