"""The plugin manager: finds plugins through the ``robust`` entry-point group.

Modelled on simonw/llm and datasette: one module-global ``PluginManager``, built-in plugins
registered through the same hooks as third-party ones, and three environment switches:

* ``ROBUST_LOAD_PLUGINS=a,b``: load only these entry points (by entry-point or distribution
  name); an empty value loads none. Built-ins are always loaded.
* ``ROBUST_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points at all (hermetic tests).
* ``ROBUST_TRACE_PLUGINS=1``: print every hook call, its arguments and results to stderr.

A plugin that fails to import, calls ``sys.exit`` at import, or implements a hook robust does not
define (a misspelt name) is recorded as broken (see :func:`broken_plugins`), costs one warning
line on stderr, and the rest keep working.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from robust import hookspecs

ENTRY_POINT_GROUP = "robust"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "robust.builtins",
    "robust.loggers.tensorboard",
)

pm = pluggy.PluginManager(hookspecs.PROJECT)
pm.add_hookspecs(hookspecs)


@dataclass
class PluginRecord:
    """What ``robust list`` and ``robust plugins`` say about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    error: str | None = None
    hooks: list[str] = field(default_factory=list)


_loaded = False
_records: dict[str, PluginRecord] = {}


def canonical(name: str) -> str:
    """Distribution names compare as PyPI does: case-insensitive, ``-``, ``_`` and ``.`` alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _allow_list() -> set[str] | None:
    value = os.environ.get("ROBUST_LOAD_PLUGINS")
    if value is None:
        return None
    items = {item.strip() for item in value.split(",") if item.strip()}
    return items | {canonical(item) for item in items}


def load_plugins() -> None:
    """Register the built-ins and every installed plugin, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if pm.get_plugin(module_name) is None:
            pm.register(module, name=module_name)
        _records[module_name] = PluginRecord(module_name, "robust-core", _version("robust-core"), True)
    if _env_flag("ROBUST_DISABLE_PLUGIN_AUTOLOAD"):
        _finish()
        return
    allowed = _allow_list()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist is not None else None
        if allowed is not None and ep.name not in allowed and canonical(dist_name or "") not in allowed:
            continue
        if pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            owner = _records[ep.name].distribution if ep.name in _records else "another plugin"
            note_error(ep.name, f"entry point name {ep.name!r} of {dist_name} is already used by {owner}; not loaded")
            continue
        version = ep.dist.version if ep.dist is not None else None
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit) must not end robust
            what = f"SystemExit({exc.code!r}) at import" if isinstance(exc, SystemExit) else type(exc).__name__
            _records[ep.name] = PluginRecord(ep.name, dist_name, version, error=f"{what}: {exc}")
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            continue
        _records[ep.name] = PluginRecord(ep.name, dist_name, version)
    _finish()


def _finish() -> None:
    _unload_unknown_hooks()
    pm.check_pending()
    for record in _records.values():
        if record.error:
            _warn(record)
    if _env_flag("ROBUST_TRACE_PLUGINS"):
        _install_tracing()


def _unload_unknown_hooks() -> None:
    """Unregister every plugin that implements a hook robust does not define (a misspelt name).

    pluggy's ``check_pending`` raises for them, which would end every command, ``--version`` too;
    instead such a plugin is recorded as broken and the others load (the check then passes)."""
    import difflib

    callers = {name: c for name, c in vars(pm.hook).items() if isinstance(c, pluggy.HookCaller)}
    known = sorted(name for name, caller in callers.items() if caller.has_spec())
    unknown: dict[str, list[str]] = {}
    for name, caller in callers.items():
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                unknown.setdefault(impl.plugin_name, []).append(name)
    for plugin_name, hooks in unknown.items():
        hints = [m for h in hooks for m in difflib.get_close_matches(h, known, n=1)]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        pm.unregister(name=plugin_name)
        note_error(plugin_name, f"implements unknown hook{'s' if len(hooks) > 1 else ''} {', '.join(hooks)}{hint}; "
                   "not loaded")  # fmt: skip


def _warn(record: PluginRecord) -> None:
    """The one line a broken plugin costs every command (``robust list plugins`` has the details)."""
    source = f" ({record.distribution}{' ' + record.version if record.version else ''})" if record.distribution else ""
    reason = (record.error or "").strip().splitlines()[0] if (record.error or "").strip() else "no reason given"
    print(
        f"robust: warning: plugin {record.name!r}{source} is broken and was not loaded: {reason[:300]}. "
        "Everything else works; `robust list plugins` shows it.",
        file=sys.stderr,
    )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _install_tracing() -> None:
    def before(hook_name, hook_impls, kwargs):
        impls = ", ".join(impl.plugin_name for impl in hook_impls)
        print(f"robust: hook {hook_name}({', '.join(kwargs)}) -> [{impls}]", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        exc = outcome.exception
        result = f"raised {exc!r}" if exc is not None else f"returned {outcome.get_result()!r}"
        print(f"robust: hook {hook_name} {result}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def call_each(hook_name: str, make_kwargs: Callable[[str], dict[str, Any]]) -> None:
    """Call every implementation of a hook separately, attributing failures to their plugin.

    Registration hooks go through here, not ``pm.hook``: one broken plugin is recorded as broken
    and the others still register. Calls are traced like pluggy's when ``ROBUST_TRACE_PLUGINS`` is set.
    """
    tracing = _env_flag("ROBUST_TRACE_PLUGINS")
    for impl in getattr(pm.hook, hook_name).get_hookimpls():  # registration order: built-ins first
        kwargs = make_kwargs(impl.plugin_name)
        if tracing:
            print(f"robust: hook {hook_name}({', '.join(kwargs)}) -> [{impl.plugin_name}]", file=sys.stderr)
        try:
            impl.function(**kwargs)
        except Exception as exc:  # a broken plugin must not take the others down
            note_error(impl.plugin_name, f"{hook_name} failed: {type(exc).__name__}: {exc}")
            if tracing:
                print(f"robust: hook {hook_name} raised {exc!r}", file=sys.stderr)


def note_error(plugin: str, message: str) -> None:
    """Mark a plugin as broken with ``message`` (shown by ``robust list plugins``)."""
    record = _records.setdefault(plugin, PluginRecord(plugin))
    record.error = f"{record.error}; {message}" if record.error else message


def plugin_records() -> list[PluginRecord]:
    """Every plugin seen, built-ins first, with the hooks each implements."""
    load_plugins()
    for name, record in _records.items():
        plugin = pm.get_plugin(name)
        if plugin is not None:
            record.hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
    for name, plugin in pm.list_name_plugin():  # plugins registered by hand (tests, scripts)
        if name not in _records and plugin is not None:
            callers = pm.get_hookcallers(plugin) or []
            _records[name] = PluginRecord(name, hooks=sorted(c.name for c in callers))
    return sorted(_records.values(), key=lambda r: (not r.builtin, r.name))


def broken_plugins() -> list[PluginRecord]:
    """Plugins recorded as broken (failed to import or register, or only partly registered)."""
    return [r for r in plugin_records() if r.error]


def unloaded_plugins() -> list[PluginRecord]:
    """Broken plugins that are not registered at all: whatever they provide is missing."""
    return [r for r in broken_plugins() if not r.builtin and pm.get_plugin(r.name) is None]


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provides a plugin, for listings (``robust-core`` for built-ins)."""
    record = _records.get(plugin_name)
    if record is not None and record.distribution:
        return record.distribution
    return plugin_name
