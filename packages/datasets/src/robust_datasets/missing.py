"""The one error every on-disk dataset raises when its files are not where they should be."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from robust.api import DataError


def missing_dataset(name: str, root: Path, expected: Iterable[str], source: str, detail: str = "") -> DataError:
    """A DataError naming the dataset, the path looked at, the files expected and where to get them."""
    files = ", ".join(expected)
    extra = f" {detail.strip()}" if detail else ""
    return DataError(
        f"Dataset {name!r} is missing or incomplete at {str(root)!r}.{extra} Expected: {files}. "
        f"Get it from {source}, then put it there, pass --data-root (or set ROBUST_DATA) to the folder "
        f"that contains it, or set --set dataset.root=PATH. `robust data verify {name}` checks it."
    )


def require(name: str, root: Path, relative: Iterable[str], source: str) -> None:
    """Raise :func:`missing_dataset` unless every ``relative`` path exists under ``root``."""
    relative = list(relative)
    absent = [r for r in relative if not (root / r).exists()]
    if absent:
        raise missing_dataset(name, root, relative, source, detail=f"Not found: {', '.join(absent)}.")
