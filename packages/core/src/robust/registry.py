"""Named things plugins provide (methods, datasets, models, losses, infills, mask providers, dataset
transforms, augmentations, batch transforms, options), looked up by name.

Built from the ``register_*`` hooks on first use; it also holds the papers' headline numbers
(``register_paper_results``, see :mod:`robust.papers`). Entries hold lazy references
(``"module:attr"``) so that listing never imports torch; :meth:`Entry.load` imports.
Unknown names raise :class:`robust.errors.UnknownNameError` with "did you mean" hints.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from robust.errors import PluginError, RobustError, UnknownNameError
from robust.papers import PaperResult, make_register
from robust.plugins import call_each, load_plugins, note_error

KINDS: dict[str, str] = {
    "method": "register_methods",
    "dataset": "register_datasets",
    "model": "register_models",
    "loss": "register_losses",
    "infill": "register_infills",
    "mask_provider": "register_mask_providers",
    "dataset_transform": "register_dataset_transforms",
    "augmentation": "register_augmentations",
    "batch_transform": "register_batch_transforms",
    "options": "register_options",
}


class Register(Protocol):
    """The callable a ``register_*`` hook receives."""

    def __call__(
        self,
        name: str,
        target: str | Any,
        *,
        config: str | type | None = None,
        description: str = "",
        aliases: tuple[str, ...] = (),
        **metadata: Any,
    ) -> None: ...


def resolve_reference(ref: str | Any, owner: str = "") -> Any:
    """Import ``"package.module:attr.sub"``; objects pass through unchanged.

    ``owner`` says who registered it ("method 'jtt' of plugin 'x' (distribution robust-x 1.0)"),
    for the error when the import fails: the user has to know which package to reinstall or report."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # any import-time failure of the plugin's module, sys.exit included
        what = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
        by = f", registered as {owner}," if owner else ""
        raise PluginError(
            f"Could not import the lazy reference {ref!r}{by} ({what}: {exc}). The plugin that registered it is "
            "installed but broken: reinstall or upgrade that distribution, or report the problem to its authors; "
            "`robust list plugins` shows which plugins load."
        ) from (exc if isinstance(exc, Exception) else None)
    return obj


class UnknownFromBrokenPlugin(UnknownNameError):
    """An unknown name while some plugins failed to load: it may be theirs, so say that, not "pip install"."""

    def __init__(self, kind: str, name: str, suggestions: list[str], known: list[str], broken: list[Any]) -> None:
        super().__init__(kind, name, suggestions, known)
        likely = [r for r in broken if _mentions(r, name)] or broken
        listed = "; ".join(
            f"{r.name!r}{f' ({r.distribution})' if r.distribution else ''}: {(r.error or '').splitlines()[0][:200]}"
            for r in likely[:3]
        )
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        RobustError.__init__(
            self,
            f"Unknown {kind} {name!r}.{hint} {len(broken)} installed plugin{'s' if len(broken) > 1 else ''} failed "
            f"to load and may provide it ({listed}). Fix or reinstall {'that plugin' if len(likely) == 1 else 'them'} "
            "(`robust list plugins` shows the error); installing it again from scratch is not what is missing.",
        )


def _mentions(record: Any, name: str) -> bool:
    from robust.plugins import canonical

    key = canonical(name)
    return any(key in canonical(text or "") for text in (record.name, record.distribution))


@dataclass(frozen=True)
class Entry:
    """One registered thing."""

    kind: str
    name: str
    target: Any
    plugin: str
    config: Any = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The registered object (class or factory), imported on demand."""
        return resolve_reference(self.target, self.owner)

    def load_config(self) -> type | None:
        """The pydantic config model: the registered one, else the target's ``Config``."""
        if self.config is not None:
            return resolve_reference(self.config, f"the config of {self.owner}")
        return getattr(self.load(), "Config", None)

    @property
    def owner(self) -> str:
        """Who registered this entry, for errors: kind, name, plugin and its distribution."""
        from robust.plugins import _records

        record = _records.get(self.plugin)
        dist = f" (distribution {record.distribution} {record.version or ''})" if record and record.distribution else ""
        return f"{self.kind} {self.name!r} of plugin {self.plugin!r}{dist.replace(' )', ')')}"

    @property
    def target_name(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}:{getattr(self.target, '__qualname__', '?')}"


class Registry:
    """All entries of all kinds."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self.paper_results: list[PaperResult] = []  # from register_paper_results (robust.papers)

    def _register_for(self, kind: str, plugin: str) -> Callable[..., None]:
        def register(
            name: str,
            target: str | Any,
            *,
            config: str | type | None = None,
            description: str = "",
            aliases: tuple[str, ...] = (),
            **metadata: Any,
        ) -> None:
            existing = self._entries[kind].get(name)
            if existing is not None:
                note_error(
                    plugin,
                    f"{kind} {name!r} is already registered by {existing.plugin}; this registration was ignored",
                )
                return
            self._entries[kind][name] = Entry(
                kind, name, target, plugin, config, description, tuple(aliases), dict(metadata)
            )
            for alias in aliases:
                self._aliases[kind].setdefault(alias, name)

        return register

    def build(self) -> None:
        for kind, hook_name in KINDS.items():
            call_each(hook_name, lambda plugin, kind=kind: {"register": self._register_for(kind, plugin)})
        call_each("register_paper_results", lambda plugin: {"register": make_register(plugin, self.paper_results)})

    def papers(self, method: str | None = None, dataset: str | None = None) -> list[PaperResult]:
        """The registered paper results, optionally of one method and/or dataset."""
        return [
            r
            for r in self.paper_results
            if (method is None or r.method == method) and (dataset is None or r.dataset == dataset)
        ]

    def entries(self, kind: str, pattern: str | None = None) -> list[Entry]:
        found = sorted(self._entries[kind].values(), key=lambda e: e.name)
        if pattern:
            found = [e for e in found if fnmatch.fnmatch(e.name, pattern)]
        return found

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def find(self, kind: str, name: str) -> Entry | None:
        name = self._aliases[kind].get(name, name)
        return self._entries[kind].get(name)

    def get(self, kind: str, name: str) -> Entry:
        entry = self.find(kind, name)
        if entry is None:
            from robust.plugins import unloaded_plugins

            broken = unloaded_plugins()
            if broken:
                raise UnknownFromBrokenPlugin(kind, name, self.suggest(kind, name), self.names(kind), broken)
            raise UnknownNameError(kind, name, self.suggest(kind, name), self.names(kind))
        return entry

    def suggest(self, kind: str, name: str) -> list[str]:
        candidates = list(self._entries[kind]) + list(self._aliases[kind])
        return difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The registry, built from every loaded plugin on first call."""
    global _registry
    if _registry is None:
        load_plugins()
        registry = Registry()
        registry.build()
        _registry = registry
    return _registry


def reset_registry() -> None:
    """Forget the registry so that it is rebuilt (after registering a plugin by hand)."""
    global _registry
    _registry = None
