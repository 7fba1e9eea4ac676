"""Errors a user can act on.

Each carries one paragraph that says what was expected and how to fix it. The CLI prints it
and exits with status 2, without a traceback (``ROBUST_DEBUG=1`` shows one).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any


class RobustError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(RobustError):
    """A config file, ``--set`` option or flag is malformed or has the wrong type."""


class PluginError(RobustError):
    """A plugin is broken or registered something that cannot be imported."""


class DataError(RobustError):
    """A dataset is missing, incomplete or corrupt."""


class DeviceError(RobustError):
    """The requested device does not exist here."""


class CheckpointError(RobustError):
    """A checkpoint cannot be read or does not match the run."""


class RunDirError(RobustError):
    """The run directory is in a state that would lose or mix results."""


class WriteError(RobustError):
    """A file could not be written (disk full, read-only, no permission); the previous one is intact."""


class NonFiniteLossError(RobustError):
    """Training produced NaN or inf; the last good checkpoint was kept."""


@functools.cache
def first_party() -> dict[str, dict[str, Any]]:
    """robust's own packages and what they register (``first_party.toml``): {distribution: {"folder":
    its folder under packages/, kind: [names]}}."""
    return tomllib.loads(Path(__file__).with_name("first_party.toml").read_text(encoding="utf-8"))


def install_hint(kind: str, name: str) -> str:
    """How to install robust's own package that registers ``name`` as ``kind`` (any kind for ``"name"``;
    ``csv:PATH`` is the csv dataset), or "" when no package of ours does."""
    key = "csv" if kind == "dataset" and name.startswith("csv:") else name
    for distribution, table in first_party().items():
        if any(key in names for k, names in table.items() if k != "folder" and kind in ("name", k)):
            return (
                f"{name!r} comes with the package {distribution}, which is not installed here: `pip install "
                f"{distribution}` (from a checkout of robust: `pip install -e packages/{table['folder']}`)."
            )
    return ""


class UnknownNameError(RobustError):
    """A method, dataset, model or loss name that no installed plugin registers."""

    def __init__(self, kind: str, name: str, suggestions: list[str], known: list[str]) -> None:
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        install = install_hint(kind, name)
        if install:
            message = f"Unknown {kind} {name!r}. {install} Installed {kind}s: {shown or 'none'}."
        else:
            message = (
                f"Unknown {kind} {name!r}.{hint} Known {kind}s: {shown or 'none'}. "
                f"Run `robust list` to see every {kind} and the package that provides it; "
                f"a {kind} from a plugin needs that plugin installed (pip install ...)."
            )
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
