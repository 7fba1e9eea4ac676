"""Errors a user can act on.

Each carries one paragraph that says what was expected and how to fix it. The CLI prints it
and exits with status 2, without a traceback (``ROBUST_DEBUG=1`` shows one).
"""

from __future__ import annotations


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


class UnknownNameError(RobustError):
    """A method, dataset, model or loss name that no installed plugin registers."""

    def __init__(self, kind: str, name: str, suggestions: list[str], known: list[str]) -> None:
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        super().__init__(
            f"Unknown {kind} {name!r}.{hint} Known {kind}s: {shown or 'none'}. "
            f"Run `robust list` to see every {kind} and the package that provides it; "
            f"a {kind} from a plugin needs that plugin installed (pip install ...)."
        )
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
