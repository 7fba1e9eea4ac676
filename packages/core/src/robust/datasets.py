"""Loading a registered dataset by name, with its options validated: for the engine and for
commands that need data outside a run (previews, analyses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robust.config import validate_section
from robust.data import DatasetBundle
from robust.errors import DataError
from robust.paths import data_root
from robust.protocols import ProtocolOptions, apply_protocol, split_protocol_options
from robust.registry import Entry, get_registry
from robust.resolve import resolve_dataset_name


def load_entry(entry: Entry, options: dict[str, Any], root: str | Path | None = None) -> DatasetBundle:
    """Call a dataset entry's factory with ``options`` validated by its config class, then apply the
    protocol options every dataset accepts (``frac``, ``imb_factor``, ``noise``... see
    :class:`robust.protocols.ProtocolOptions`) that the dataset does not handle itself."""
    config_cls = entry.load_config()
    own, generic = split_protocol_options(options, set(config_cls.model_fields) if config_cls is not None else set())
    config = None
    if config_cls is not None:
        config = config_cls.model_validate(validate_section("dataset", entry.name, own, config_cls))
    bundle = entry.load()(config, data_root(root))
    if not isinstance(bundle, DatasetBundle):
        raise DataError(
            f"Dataset {entry.name!r} (plugin {entry.plugin}) returned {type(bundle).__name__}, not a robust.data.DatasetBundle."
        )
    try:
        return apply_protocol(bundle, ProtocolOptions.model_validate(generic))
    except ValueError as exc:
        raise DataError(
            f"Cannot apply {', '.join(f'{k}={v}' for k, v in generic.items())} to dataset {entry.name!r}: {exc}. "
            "Lower meta_per_class or frac, or choose another imb_factor."
        ) from None


def load_dataset(name: str, options: dict[str, Any] | None = None, root: str | Path | None = None) -> DatasetBundle:
    """The dataset registered (or resolved by a plugin) under ``name``."""
    entry, pattern_options = resolve_dataset_name(get_registry(), name)
    return load_entry(entry, {**pattern_options, **(options or {})}, root)
