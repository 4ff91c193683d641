"""The plugin manager: loads plugins from the entry-point group and builds the name tables.

Built-ins and third-party plugins travel the same road: both are entry points in the ``rsitr_bench``
group. Loading is wrapped per plugin, so a plugin that fails to import or to register is reported (name,
distribution, error) and skipped; it never takes the host down. ``RSITR_BENCH_DISABLE_PLUGIN_AUTOLOAD=1``
loads only rsitr-bench's own plugins, and a block list (``--no-plugin NAME``) drops single plugins.

Hooks are called through pluggy (``pm.hook.NAME(...)``), so ``tryfirst``, ``trylast`` and hook wrappers work as
pluggy documents them. Per-plugin isolation lives in one place, :class:`_Isolation`: every plugin is registered
through a proxy whose hook implementations record their own exception (and, for registration hooks, a result
that is not a list of the kind's spec type) instead of raising it, so one broken plugin never aborts a hook
call for the others.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from rsitr_bench import hookspecs
from rsitr_bench.api import PLUGIN_KINDS, PluginSpec
from rsitr_bench.errors import UnknownPluginError

ENTRY_POINT_GROUP = "rsitr_bench"
AUTOLOAD_ENV = "RSITR_BENCH_DISABLE_PLUGIN_AUTOLOAD"
OWN_DISTRIBUTION = "rsitr-bench"

_SPEC_TYPE_OF_HOOK: dict[str, type[PluginSpec]] = {kind.hook: kind.spec for kind in PLUGIN_KINDS.values()}


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


@dataclass(frozen=True)
class _Fault:
    """One hook implementation that raised (or returned something that is not its kind's specs)."""

    plugin: str
    hook: str
    error: str


class _GuardedPlugin:
    """What is registered with pluggy in a plugin's place: its hook implementations, guarded, as attributes.

    A plain object (hashable, unlike a namespace), so pluggy can also leave it out of a subset call.
    """

    def __init__(self, hooks: dict[str, Any]):
        self.__dict__.update(hooks)


class _Isolation:
    """Wraps each plugin's hook implementations so that a failure is recorded, not raised.

    A guarded implementation returns None after a failure, which pluggy leaves out of the hook's results.
    Registration results are also checked (a list of the kind's spec type) and remembered by identity, so
    the host can tell which plugin registered which spec after pluggy merged them.
    """

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.faults: list[_Fault] = []
        self.owners: dict[int, tuple[PluginSpec, str]] = {}

    def proxy(self, plugin: object, name: str) -> _GuardedPlugin:
        """A stand-in for ``plugin`` whose hook implementations are guarded; wrappers are kept as they are."""
        hooks: dict[str, Any] = {}
        for attr in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            function = getattr(plugin, attr)
            wrapper = opts.get("wrapper") or opts.get("hookwrapper")
            hooks[attr] = function if wrapper else self._guard(function, name, opts.get("specname") or attr)
        return _GuardedPlugin(hooks)

    def _guard(self, function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
        spec_type = _SPEC_TYPE_OF_HOOK.get(hook)

        @functools.wraps(function)  # keeps pluggy's marker and, through __wrapped__, the argument names
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = function(*args, **kwargs)
                if spec_type is None:
                    return result
                specs = list(result or [])
                for spec in specs:
                    if not isinstance(spec, spec_type):
                        raise TypeError(f"{hook} returned {type(spec).__name__}, expected a {spec_type.__name__}")
            except Exception as exc:
                self.faults.append(_Fault(plugin, hook, _describe(exc)))
                return None
            self.owners.update((id(spec), (spec, plugin)) for spec in specs)
            return specs

        return guarded

    def call(self, hook: str, **kwargs: Any) -> tuple[list[Any], list[_Fault]]:
        """Call ``hook`` through pluggy; return its results and the failures of this call.

        Only a hook wrapper can still make the call raise; it is then reported and the hook called again
        without the wrappers, so a broken wrapper costs its own plugin, not everyone's registrations.
        """
        caller = getattr(self.pm.hook, hook)
        self.faults = []
        try:
            results = caller(**kwargs)
        except Exception as exc:
            wrappers = [impl for impl in caller.get_hookimpls() if impl.wrapper or impl.hookwrapper]
            self.faults = [_Fault(impl.plugin_name, hook, _describe(exc)) for impl in wrappers]
            results = self.pm.subset_hook_caller(hook, remove_plugins=[impl.plugin for impl in wrappers])(**kwargs)
        return results, self.faults


@dataclass
class PluginHost:
    """The loaded plugins and the name tables built from their registrations."""

    manager: pluggy.PluginManager
    isolation: _Isolation = field(repr=False)
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    tables: dict[str, dict[str, Registered]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Registered:
        """Look up a registration; an unknown name raises an error listing the known ones."""
        table = self.tables[kind]
        if name not in table:
            raise UnknownPluginError(PLUGIN_KINDS[kind].human, name, list(table))
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.tables[kind])

    def notify_run_finished(self, run: dict[str, Any]) -> list[str]:
        """Call ``rsitr_run_finished`` on every plugin; return the errors instead of raising them."""
        _, faults = self.isolation.call("rsitr_run_finished", run=run)
        return [f"plugin {fault.plugin!r}: {fault.error}" for fault in faults]


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
    isolation = _Isolation(pm)
    host = PluginHost(manager=pm, isolation=isolation)
    autoload = os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes")

    # (name, distribution, version, a loader returning the plugin object). A loader, not an isinstance test on
    # the entry point: another package importing the importlib_metadata backport changes entry points' class.
    candidates: list[tuple[str, str, str, Callable[[], object]]] = []
    # rsitr-bench's own plugins come first, so a third-party plugin can never shadow a built-in name.
    for ep in sorted(_entry_points(), key=lambda ep: not _is_own(_distribution_of(ep)[0])):
        dist, version = _distribution_of(ep)
        if not autoload and not _is_own(dist):
            continue
        candidates.append((ep.name, dist, version, ep.load))
    for name, obj in extra_plugins:
        candidates.append((name, "(registered directly)", "", lambda obj=obj: obj))
    known = [c[0] for c in candidates]
    unknown = [name for name in blocked if name not in known]
    if unknown:
        raise UnknownPluginError("plugin", unknown[0], known)

    loaded: list[tuple[PluginInfo, object]] = []
    for name, dist, version, load in candidates:
        if pm.is_blocked(name) or any(info.name == name for info, _ in loaded):
            continue
        try:
            plugin = load()
        except Exception as exc:
            host.failures.append(PluginFailure(name, dist, "import", _describe(exc)))
            continue
        module = getattr(plugin, "__name__", type(plugin).__name__)
        loaded.append((PluginInfo(name, dist, version, module), plugin))
    # pluggy calls the plugin registered last first, so registering in reverse makes its call order the
    # candidates' order: built-ins, then third-party plugins (tryfirst/trylast move a plugin within that).
    registered = set()
    for info, plugin in reversed(loaded):
        try:
            pm.register(isolation.proxy(plugin, info.name), name=info.name)
        except Exception as exc:
            host.failures.append(PluginFailure(info.name, info.distribution, "import", _describe(exc)))
            continue
        registered.add(info.name)
    host.plugins = [info for info, _ in loaded if info.name in registered]

    info_by_name = {p.name: p for p in host.plugins}
    for kind, plugin_kind in PLUGIN_KINDS.items():
        results, faults = isolation.call(plugin_kind.hook)
        for fault in faults:
            host.failures.append(PluginFailure(fault.plugin, info_by_name[fault.plugin].distribution,
                                               plugin_kind.hook, fault.error))
        entries = []
        for spec in (spec for specs in results for spec in specs):
            if id(spec) not in isolation.owners:
                host.failures.append(PluginFailure(
                    "(hook wrapper)", "unknown", plugin_kind.hook,
                    f"{plugin_kind.human} {getattr(spec, 'name', spec)!r} was returned by a hook wrapper, not "
                    f"registered by a plugin; skipped"))
                continue
            entries.append(Registered(spec, info_by_name[isolation.owners[id(spec)][1]]))
        # pluggy's call order decides among third-party plugins; a built-in always wins a clash.
        entries.sort(key=lambda entry: not _is_own(entry.plugin.distribution))
        table: dict[str, Registered] = {}
        for entry in entries:
            if entry.spec.name in table:
                owner = table[entry.spec.name].plugin.name
                host.failures.append(PluginFailure(
                    entry.plugin.name, entry.plugin.distribution, plugin_kind.hook,
                    f"{plugin_kind.human} {entry.spec.name!r} is already registered by plugin {owner!r}; skipped"))
                continue
            table[entry.spec.name] = entry
        host.tables[kind] = table
    return host


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
