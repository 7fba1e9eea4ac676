"""Generate once, then read from disk: the on-disk cache of the generated datasets.

Generating a synthetic dataset takes seconds; reading it back takes milliseconds, and every run
of a sweep needs it. A cache file is an uncompressed ``.npz`` named by a hash of the dataset
name, its options and a format version, so changing an option or the generator (bump the
version) never reads a stale file. It is written atomically, so an interrupted run leaves either
no file or a whole one; a file that cannot be read anyway (disk error, manual edit) is
regenerated rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robust.api import DataError, atomic_write

logger = logging.getLogger(__name__)

META_KEY = "__meta__"


def cache_path(directory: Path, name: str, options: Mapping[str, Any], version: int) -> Path:
    """The file that holds dataset ``name`` generated with ``options`` by generator ``version``."""
    return Path(directory) / f"{name}-v{version}-{_digest(_meta(name, options, version))}.npz"


def load_or_generate(
    directory: Path,
    name: str,
    options: Mapping[str, Any],
    version: int,
    generate: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays from the cache file if it is intact, else ``generate()`` (then cached)."""
    meta = _meta(name, options, version)
    path = cache_path(directory, name, options, version)
    try:  # fail before spending seconds on generation, not after
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(name, path, exc) from exc
    if path.exists():
        arrays = _read(path, meta)
        if arrays is not None:
            return arrays
        logger.warning("Dataset cache %s is unreadable or does not match its options; regenerating it.", path)
    arrays = generate()
    stored = {**arrays, META_KEY: np.array(json.dumps({**meta, "arrays": sorted(arrays)}))}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to a path
            np.savez(handle, **stored)

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise _unwritable(name, path, exc) from exc
    return arrays


def _unwritable(name: str, path: Path, exc: OSError) -> DataError:
    return DataError(
        f"Cannot write the {name} dataset cache to {str(path)!r} ({exc}). Generated datasets are "
        "cached under the data root: pass a writable directory with --data-root or $ROBUST_DATA."
    )


def _meta(name: str, options: Mapping[str, Any], version: int) -> dict[str, Any]:
    return {"dataset": name, "version": version, "options": dict(options)}


def _digest(meta: Mapping[str, Any]) -> str:
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _read(path: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """Every array of the file, or None when it is corrupt, truncated or for other options."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = json.loads(str(archive[META_KEY][()]))
            expected = {k: v for k, v in stored.items() if k != "arrays"}
            if json.dumps(expected, sort_keys=True, default=str) != json.dumps(dict(meta), sort_keys=True, default=str):
                return None
            # Reading every member to the end makes zipfile check its CRC.
            return {key: archive[key] for key in stored["arrays"]}
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
