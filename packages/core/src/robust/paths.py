"""Where datasets and runs live by default."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root``, then ``$ROBUST_DATA``, then ``$XDG_DATA_HOME/robust`` (``~/.local/share/robust``)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("ROBUST_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "robust"
