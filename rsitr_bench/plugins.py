"""The plugin manager: loads plugins from the entry-point group and builds the name tables.

Built-ins and third-party plugins travel the same road: both are entry points in the ``rsitr_bench``
group. Loading is wrapped per plugin, so a plugin that fails to import or to register is reported (name,
distribution, error) and skipped; it never takes the host down. ``RSITR_BENCH_DISABLE_PLUGIN_AUTOLOAD=1``
loads only rsitr-bench's own plugins, and a block list (``--no-plugin NAME``) drops single plugins.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from rsitr_bench import hookspecs
from rsitr_bench.api import PluginSpec
from rsitr_bench.errors import UnknownPluginError

ENTRY_POINT_GROUP = "rsitr_bench"
AUTOLOAD_ENV = "RSITR_BENCH_DISABLE_PLUGIN_AUTOLOAD"
OWN_DISTRIBUTION = "rsitr-bench"

# kind -> (registration hook, human name)
KINDS: dict[str, tuple[str, str]] = {
    "datasets": ("rsitr_register_datasets", "dataset"),
    "keywords": ("rsitr_register_keyword_providers", "keyword provider"),
    "perspectives": ("rsitr_register_perspective_generators", "perspective generator"),
    "methods": ("rsitr_register_methods", "method"),
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from."""

    name: str
    distribution: str
    version: str
    module: str


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, and why."""

    name: str
    distribution: str
    stage: str
    error: str


@dataclass(frozen=True)
class Registered:
    """One named entry of a kind table, with the plugin that registered it."""

    spec: PluginSpec
    plugin: PluginInfo


@dataclass
class PluginHost:
    """The loaded plugins and the name tables built from their registrations."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    tables: dict[str, dict[str, Registered]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Registered:
        """Look up a registration; an unknown name raises an error listing the known ones."""
        table = self.tables[kind]
        if name not in table:
            raise UnknownPluginError(KINDS[kind][1], name, list(table))
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.tables[kind])

    def notify_run_finished(self, run: dict[str, Any]) -> list[str]:
        """Call ``rsitr_run_finished`` on every plugin; return the errors instead of raising them."""
        errors = []
        for impl in self.manager.hook.rsitr_run_finished.get_hookimpls():
            try:
                impl.function(run=run)
            except Exception as exc:  # a tracker must not fail a finished run
                errors.append(f"plugin {impl.plugin_name!r}: {type(exc).__name__}: {exc}")
        return errors


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"], dist.version


def _entry_points() -> Iterable[metadata.EntryPoint]:
    seen = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:  # an editable install can expose the same entry point twice
            seen.add(key)
            yield ep


def _is_own(distribution: str) -> bool:
    return distribution.replace("_", "-").lower() == OWN_DISTRIBUTION


def build_plugin_host(blocked: Iterable[str] = (), extra_plugins: Iterable[tuple[str, object]] = ()) -> PluginHost:
    """Load every plugin and build the name tables.

    Arguments:
        blocked: plugin (entry-point) names not to load, as given to ``--no-plugin``.
        extra_plugins: ``(name, module_or_object)`` pairs registered directly, for tests and embedding.
    """
    blocked = list(blocked)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    host = PluginHost(manager=pm)
    autoload = os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes")

    candidates: list[tuple[str, str, str, Any]] = []
    # rsitr-bench's own plugins register first, so a third-party plugin can never shadow a built-in name.
    for ep in sorted(_entry_points(), key=lambda ep: not _is_own(_distribution_of(ep)[0])):
        dist, version = _distribution_of(ep)
        if not autoload and not _is_own(dist):
            continue
        candidates.append((ep.name, dist, version, ep))
    for name, obj in extra_plugins:
        candidates.append((name, "(registered directly)", "", obj))
    known = [c[0] for c in candidates]
    unknown = [name for name in blocked if name not in known]
    if unknown:
        raise UnknownPluginError("plugin", unknown[0], known)

    for name, dist, version, source in candidates:
        if pm.is_blocked(name) or pm.has_plugin(name):
            continue
        try:
            plugin = source.load() if isinstance(source, metadata.EntryPoint) else source
            pm.register(plugin, name=name)
        except Exception as exc:
            host.failures.append(PluginFailure(name, dist, "import", _describe(exc)))
            continue
        module = getattr(plugin, "__name__", type(plugin).__name__)
        host.plugins.append(PluginInfo(name, dist, version, module))

    info_by_name = {p.name: p for p in host.plugins}
    for kind, (hook_name, _) in KINDS.items():
        table: dict[str, Registered] = {}
        # get_hookimpls() lists plugins in registration order (built-ins first), so the first one wins a clash.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            info = info_by_name[impl.plugin_name]
            try:
                specs = list(impl.function() or [])
                for spec in specs:
                    if not isinstance(spec, PluginSpec):
                        raise TypeError(f"{hook_name} returned {type(spec).__name__}, expected a PluginSpec")
            except Exception as exc:
                host.failures.append(PluginFailure(info.name, info.distribution, hook_name, _describe(exc)))
                continue
            for spec in specs:
                if spec.name in table:
                    owner = table[spec.name].plugin.name
                    host.failures.append(PluginFailure(
                        info.name, info.distribution, hook_name,
                        f"{KINDS[kind][1]} {spec.name!r} is already registered by plugin {owner!r}; skipped"))
                    continue
                table[spec.name] = Registered(spec, info)
        host.tables[kind] = table
    return host


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
