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
    :class:`robust.protocols.ProtocolOptions`) that the dataset does not handle itself, then the
    registered dataset transforms whose options were given (``register_dataset_transforms``)."""
    config_cls = entry.load_config()
    dataset_fields = set(config_cls.model_fields) if config_cls is not None else set()
    options, transforms = split_transform_options(options, dataset_fields)
    bundle = _load_with_protocol(entry, config_cls, options, dataset_fields, root)
    for transform, given in transforms:
        transform_config = transform.load_config()
        validated = transform_config.model_validate(validate_section("dataset", entry.name, given, transform_config))
        bundle = transform.load()(bundle, validated)
        if not isinstance(bundle, DatasetBundle):
            raise DataError(
                f"Dataset transform {transform.name!r} (plugin {transform.plugin}) returned {type(bundle).__name__}, "
                "not a robust.data.DatasetBundle."
            )
    return bundle


def split_transform_options(options: dict[str, Any], dataset_fields: set[str]) -> tuple[dict[str, Any], list]:
    """Options left for the dataset and the core protocols, and ``(transform entry, its options)``
    for each registered transform some of whose options were given (a key the dataset owns stays its)."""
    rest = dict(options)
    chosen = []
    for transform in get_registry().entries("dataset_transform"):
        config = transform.load_config()
        if config is None:
            continue
        given = {k: rest.pop(k) for k in list(rest) if k in config.model_fields and k not in dataset_fields}
        if given:
            chosen.append((transform, given))
    return rest, chosen


def _load_with_protocol(
    entry: Entry, config_cls: Any, options: dict[str, Any], dataset_fields: set[str], root: str | Path | None
) -> DatasetBundle:
    own, generic = split_protocol_options(options, dataset_fields)
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
