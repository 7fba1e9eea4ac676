"""Loading a registered dataset by name, with its options validated: for the engine and for
commands that need data outside a run (previews, analyses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robust.data import DatasetBundle
from robust.errors import DataError
from robust.paths import data_root
from robust.registry import Entry, get_registry
from robust.resolve import resolve_dataset_name


def load_entry(entry: Entry, options: dict[str, Any], root: str | Path | None = None) -> DatasetBundle:
    """Call a dataset entry's factory with ``options`` validated by its config class."""
    config_cls = entry.load_config()
    config = config_cls.model_validate(options) if config_cls is not None else None
    bundle = entry.load()(config, data_root(root))
    if not isinstance(bundle, DatasetBundle):
        raise DataError(
            f"Dataset {entry.name!r} (plugin {entry.plugin}) returned {type(bundle).__name__}, not a robust.data.DatasetBundle."
        )
    return bundle


def load_dataset(name: str, options: dict[str, Any] | None = None, root: str | Path | None = None) -> DatasetBundle:
    """The dataset registered (or resolved by a plugin) under ``name``."""
    from robust.config import validate_section

    entry, pattern_options = resolve_dataset_name(get_registry(), name)
    merged = {**pattern_options, **(options or {})}
    return load_entry(entry, validate_section("dataset", entry.name, merged, entry.load_config()), root)
