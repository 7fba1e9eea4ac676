"""Where datasets and runs live by default."""

from __future__ import annotations

import os
from pathlib import Path


def expand_user(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; ValueError (what pydantic validators report)
    when there is no such user or home directory, instead of pathlib's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:
        raise ValueError(f"cannot expand the '~' of {str(path)!r} ({exc}): no such user or home directory") from None


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root``, then ``$ROBUST_DATA``, then ``$XDG_DATA_HOME/robust`` (``~/.local/share/robust``)."""
    from robust.errors import ConfigError

    for source, value in (("--data-root", explicit), ("$ROBUST_DATA", os.environ.get("ROBUST_DATA"))):
        if value:
            try:
                return expand_user(value)
            except ValueError as exc:
                raise ConfigError(f"The data root from {source}: {exc}. Pass an existing folder.") from None
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "robust"
