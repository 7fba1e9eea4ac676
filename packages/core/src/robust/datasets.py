"""Loading a registered dataset by name, with its options validated: for the engine and for
commands that need data outside a run (previews, analyses).

A dataset's options are its own fields plus those of every registered dataset transform
(``register_dataset_transforms``: ``frac`` from the core; the meta set, long tail and label noise
from robust-datasets; ``mask_provider`` from robust-counterfactual; ``groups`` from robust-groups;
the rare study's planting). A key the dataset owns stays the dataset's; a key several transforms
declare (``protocol_seed``) goes to each. The transforms whose options were given run after
loading, in their registered ``order`` (then by name): 0 frac, 10 meta set / long tail / noise,
20 masks from a provider, 30 inferred groups, 50 (the default) the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from robust.config import describe_validation_error, validate_section
from robust.data import DatasetBundle
from robust.errors import ConfigError, DataError
from robust.paths import data_root
from robust.plugins import pm
from robust.registry import Entry, Registry, get_registry

DEFAULT_ORDER = 50


def transform_entries() -> list[Entry]:
    """The registered dataset transforms with options, in the order they are applied."""
    entries = [e for e in get_registry().entries("dataset_transform") if e.load_config() is not None]
    return sorted(entries, key=lambda e: (e.metadata.get("order", DEFAULT_ORDER), e.name))


def transform_keys() -> set[str]:
    """Every dataset option a transform declares (what any dataset accepts besides its own)."""
    return {k for e in transform_entries() for k in e.load_config().model_fields}


def split_transform_options(options: dict[str, Any], dataset_fields: set[str]) -> tuple[dict[str, Any], list]:
    """The options left for the dataset, and ``(transform entry, its options)`` for each registered
    transform some of whose options were given (a key the dataset owns stays its own; a key several
    transforms declare goes to each of them)."""
    taken: set[str] = set()
    chosen = []
    for transform in transform_entries():
        fields = transform.load_config().model_fields
        given = {k: v for k, v in options.items() if k in fields and k not in dataset_fields}
        if given:
            chosen.append((transform, given))
            taken.update(given)
    rest = {k: v for k, v in options.items() if k not in taken}
    return rest, chosen


def validate_transform_options(dataset: str, transforms: list) -> dict[str, Any]:
    """The given transform options, checked by each transform's model (a clear error otherwise)."""
    checked: dict[str, Any] = {}
    for transform, given in transforms:
        model = transform.load_config()
        try:
            validated = model.model_validate(given)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(f"dataset transform {transform.name!r}", exc, model)) from None
        checked.update(validated.model_dump(mode="json", exclude_unset=True))
    return checked


def load_entry(entry: Entry, options: dict[str, Any], root: str | Path | None = None) -> DatasetBundle:
    """Call a dataset entry's factory with its own options validated by its config class, then apply
    the registered dataset transforms whose options were given, in order."""
    config_cls = entry.load_config()
    dataset_fields = set(config_cls.model_fields) if config_cls is not None else set()
    own, transforms = split_transform_options(options, dataset_fields)
    config = None
    if config_cls is not None:
        config = config_cls.model_validate(validate_section("dataset", entry.name, own, config_cls))
    bundle = entry.load()(config, data_root(root))
    if not isinstance(bundle, DatasetBundle):
        raise DataError(
            f"Dataset {entry.name!r} (plugin {entry.plugin}) returned {type(bundle).__name__}, not a robust.data.DatasetBundle."
        )
    for transform, given in transforms:
        transform_config = transform.load_config()
        validated = transform_config.model_validate(validate_section("dataset", entry.name, given, transform_config))
        try:
            bundle = transform.load()(bundle, validated)
        except ValueError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in given.items())
            raise DataError(
                f"Cannot apply {shown} (dataset transform {transform.name!r}) to dataset {entry.name!r}: {exc}."
            ) from None
        if not isinstance(bundle, DatasetBundle):
            raise DataError(
                f"Dataset transform {transform.name!r} (plugin {transform.plugin}) returned {type(bundle).__name__}, "
                "not a robust.data.DatasetBundle."
            )
    return bundle


def resolve_dataset_name(registry: Registry, name: str) -> tuple[Entry, dict[str, Any]]:
    """A registered dataset, or one a plugin's ``resolve_dataset`` hook recognises."""
    entry = registry.find("dataset", name)
    if entry is not None:
        return entry, {}
    answer = pm.hook.resolve_dataset(name=name)
    if answer is not None:
        resolved_name, options = answer
        return registry.get("dataset", resolved_name), dict(options)
    return registry.get("dataset", name), {}  # raises UnknownNameError (naming plugins that failed to load)


def load_dataset(name: str, options: dict[str, Any] | None = None, root: str | Path | None = None) -> DatasetBundle:
    """The dataset registered (or resolved by a plugin) under ``name``."""
    entry, pattern_options = resolve_dataset_name(get_registry(), name)
    return load_entry(entry, {**pattern_options, **(options or {})}, root)
