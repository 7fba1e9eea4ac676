"""Is an on-disk dataset here? Answered from its registration alone, before torch is imported.

A dataset plugin registers an on-disk dataset with metadata (``robust data status`` reads the same):
``folder`` (its folder under the data root), ``files`` (paths inside it that must exist; may be
empty: the folder alone), ``source`` (where to get it), and optionally ``folder_alternatives``
(other folders under the data root it is also read from) and ``downloadable`` (``robust data
download NAME`` fetches it). ``robust run`` checks this before it imports the engine, so that a
missing dataset is reported in a fraction of a second, not after torch has loaded. The check
stands aside whenever the dataset's own loader may find the files elsewhere: options that say
where the files are (:data:`LOCATION_OPTIONS`), an HDF5 cache of the dataset
(``DATA_ROOT/.cache/NAME-*.h5``, which runs read instead of the files), or no ``files`` declared.

This module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robust.errors import DataError

#: Dataset options that say where the files are: when one is given, the loader checks its own files.
LOCATION_OPTIONS = frozenset({"root", "metadata", "image_dir", "image_root", "masks_dir"})
CACHE_DIR = ".cache"


def missing_files(entry: Any, options: dict[str, Any], root: Path) -> tuple[Path, list[str]] | None:
    """(where it looked, what is missing there) when the registration's files are not under ``root``;
    None when they are, or when this check cannot tell (see the module's docstring)."""
    metadata = entry.metadata
    folder, files = metadata.get("folder"), metadata.get("files")
    if folder is None or files is None or LOCATION_OPTIONS & set(options):
        return None
    cache = root / CACHE_DIR
    if cache.is_dir() and any(cache.glob(f"{entry.name}-*.h5")):
        return None
    candidates = [root / folder, *(root / alt for alt in metadata.get("folder_alternatives", ()))]
    for base in candidates:
        if base.is_dir() and all((base / f).exists() for f in files):
            return None
    base = next((c for c in candidates if c.is_dir()), candidates[0])
    if not base.is_dir():
        return base, [f"{base.name}/ (the folder)"]
    return base, [f for f in files if not (base / f).exists()]


def check_dataset_files(entry: Any, options: dict[str, Any], root: Path) -> None:
    """Raise the DataError the dataset's loader would raise, when its files are missing."""
    found = missing_files(entry, options, root)
    if found is None:
        return
    base, absent = found
    files = list(entry.metadata.get("files", ())) or [f"{base.name}/"]
    source = entry.metadata.get("source") or "the dataset's authors"
    how = (
        f"Download it with `robust data download {entry.name}`, or get it from {source}"
        if entry.metadata.get("downloadable")
        else f"Get it from {source}"
    )
    also = [str(root / alt) for alt in entry.metadata.get("folder_alternatives", ())]
    looked = f" (also looked in {', '.join(repr(a) for a in also)})" if also else ""
    raise DataError(
        f"Dataset {entry.name!r} is missing or incomplete at {str(base)!r}{looked}. Not found: "
        f"{', '.join(absent)}. Expected: {', '.join(files)}. {how}, then put it there, pass --data-root (or set "
        f"ROBUST_DATA) to the folder that contains it, or set --set dataset.root=PATH. `robust data status` shows "
        "every dataset and where it goes."
    )
