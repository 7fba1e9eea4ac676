"""From what the user typed to a validated :class:`robust.config.RunConfig`.

Merges defaults, the method's preset, ``--config FILE``, ``--set`` and flags (in that order),
routes unprefixed ``--set`` keys, resolves dataset name patterns through plugins, and validates
every section against its pydantic model, so that mistakes fail before any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from robust.config import (
    RunConfig,
    deep_merge,
    describe_validation_error,
    load_toml,
    nest,
    option_names,
    parse_set,
    route_set_key,
    validate_typed,
)
from robust.datasets import resolve_dataset_name
from robust.errors import ConfigError, RobustError
from robust.plugin_options import plugin_sections, run_config_model, train_config_model
from robust.registry import Entry, get_registry, resolve_reference

DEFAULT_MODEL = "cnn"


@dataclass
class Resolved:
    """A validated config and the registry entries it names."""

    config: RunConfig
    method: Entry
    dataset: Entry
    model: Entry
    #: What resolution changed that the user should know (one line each; ``robust run`` prints them).
    notes: list[str] = field(default_factory=list)
    #: The method's options as its typed config (validated here, once; the engine builds the method with it).
    method_config: Any = None


def resolve_run_config(
    method: str,
    *,
    dataset: str | None = None,
    model: str | None = None,
    config_file: str | None = None,
    sets: tuple[str, ...] | list[str] = (),
    flags: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Resolved:
    """Build the run's config. ``flags`` are CLI options (seed, device, epochs, steps, data_root);
    ``base`` is a stored config (``--resume``) that the user's options override. A mistake is a
    ConfigError that names the config file when one was given."""
    try:
        return _resolve(method, dataset, model, config_file, sets, flags, base)
    except RobustError as exc:  # ConfigError, UnknownNameError (a name in the file)...: same class, file named
        if config_file is not None and str(config_file) not in str(exc):
            exc.args = (f"{exc} (The options came from the defaults, the preset, the config file "
                        f"{str(config_file)!r}, --set and the flags.)",)  # fmt: skip
        raise


def _name(value: Any, what: str) -> str:
    """A name given in a config (dataset, model, preset): a non-empty string, else a ConfigError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a name (a non-empty string), got {value!r} ({type(value).__name__}).")
    return value


def _resolve(
    method: str,
    dataset: str | None,
    model: str | None,
    config_file: str | None,
    sets: tuple[str, ...] | list[str],
    flags: dict[str, Any] | None,
    base: dict[str, Any] | None,
) -> Resolved:
    registry = get_registry()
    method_entry = registry.get("method", method)
    method_cls = method_entry.load()
    method_config = method_entry.load_config()
    method_fields = option_names(method_config)

    file_tree = load_toml(config_file) if config_file else {}
    user: dict[str, Any] = deep_merge(_strip_record(base or {}), file_tree)
    explicit: dict[str, Any] = file_tree  # what the user gave in this command (not a stored run's config)
    train_model = train_config_model()
    own_sections = plugin_sections()
    for item in sets:
        path, value = parse_set(item)
        route = route_set_key(path, method_fields, set(train_model.model_fields), own_sections)
        user = deep_merge(user, nest(route, value))
        explicit = deep_merge(explicit, nest(route, value))
    for section in ("method", "dataset", "model", "train"):
        if section in user and not isinstance(user[section], dict):
            raise ConfigError(
                f"{section!r} must be a table of options (e.g. [{section}] in TOML), got {user[section]!r}."
            )
    flag_tree: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key in train_model.model_fields:
            flag_tree = deep_merge(flag_tree, {"train": {key: value}})
        else:
            flag_tree[key] = value

    given_train = {**_table(explicit.get("train")), **flag_tree.get("train", {})}
    epochs_given, steps_given = given_train.get("epochs") is not None, given_train.get("steps") is not None
    if epochs_given and steps_given:
        raise ConfigError(
            f"Both train.epochs ({given_train['epochs']!r}) and train.steps ({given_train['steps']!r}) are given "
            "(--epochs / --steps, --set or the config file), but a run trains for one or the other: steps would "
            "silently replace epochs. Pass only one of them."
        )

    dataset_name = dataset or user.get("dataset", {}).get("name")
    if dataset_name is None:
        raise ConfigError(
            "No dataset given. Pass --dataset NAME (see `robust list datasets`) or set [dataset] name in the config file."
        )
    dataset_name = _name(dataset_name, "dataset.name")
    dataset_entry, pattern_options = resolve_dataset_name(registry, dataset_name)

    presets = getattr(method_cls, "presets", {})
    preset_name = flag_tree.get("preset") or user.get("preset")
    if preset_name is not None:
        preset_name = _name(preset_name, "preset")
    auto = preset_name is None
    if auto:
        given = {**pattern_options, **user.get("dataset", {})}
        preset_name = method_cls.preset_for(dataset_entry.name, _dataset_options(dataset_entry, given))
    preset: dict[str, Any] = {}
    if preset_name == "none":
        preset_name = None
    if preset_name is not None:
        if preset_name not in presets:
            how = f"picked automatically for dataset {dataset_entry.name!r}" if auto else "requested"
            raise ConfigError(
                f"Method {method!r} has no preset {preset_name!r} ({how}). Its presets: "
                f"{', '.join(sorted(presets)) or 'none'}. Choose one with --set preset=NAME, or run without a "
                "preset with --set preset=none."
            )
        preset = presets[preset_name]
        chosen_model = model or user.get("model", {}).get("name")
        if chosen_model and preset.get("model", {}).get("name") not in (None, chosen_model):
            # The preset's model options belong to its model; another model keeps its own defaults.
            preset = {k: v for k, v in preset.items() if k != "model"}

    tree = deep_merge(deep_merge(deep_merge({"dataset": pattern_options}, preset), user), flag_tree)
    tree["preset"] = preset_name
    notes: list[str] = []
    dropped = tree.get("train", {}).get("steps") if epochs_given and not steps_given else None
    if dropped is not None:  # the user's epochs win over steps they did not give (a preset's, a stored run's)
        source = f"preset {preset_name!r}" if preset.get("train", {}).get("steps") == dropped else "the stored run"
        epochs = given_train["epochs"]
        tree["train"] = {**tree["train"], "steps": None}
        notes.append(
            f"--epochs {epochs} replaces the {dropped} training steps of {source} (train.steps): this run trains "
            f"for {epochs} epoch{'s' if epochs != 1 else ''}. Pass --steps N instead to keep a step schedule."
        )

    model_name = model or tree.get("model", {}).get("name")
    if model_name is None and "choose_model" in dataset_entry.metadata:
        # The dataset picks a model that suits its options (image size...): the user's model options still win.
        given = {**pattern_options, **tree.get("dataset", {})}
        chosen = dict(
            resolve_reference(dataset_entry.metadata["choose_model"], dataset_entry.owner)(
                _dataset_options(dataset_entry, given)
            )
        )
        model_name = chosen.pop("name")
        tree["model"] = deep_merge(chosen, tree.get("model", {}))
    model_name = _name(
        model_name or dataset_entry.metadata.get("default_model") or DEFAULT_MODEL,
        "model.name",
    )
    model_entry = registry.get("model", model_name)

    sections = {}
    typed_method = None
    for section, entry in (("method", method_entry), ("dataset", dataset_entry), ("model", model_entry)):
        options = {k: v for k, v in tree.get(section, {}).items() if k != "name"}
        generic: dict[str, Any] = {}
        if section == "dataset":  # options every dataset accepts: the registered dataset transforms'
            options, generic = _transform_options(entry, options)
        try:
            typed = validate_typed(section, entry.name, options, entry.load_config())
            own = typed.model_dump(mode="json") if typed is not None else {}
            if section == "method":
                typed_method = typed
        except ConfigError as exc:
            if section != "dataset":
                raise
            from robust.datasets import transform_keys

            raise ConfigError(
                f"{exc} Every dataset also accepts the options of the registered dataset transforms: "
                f"{', '.join(sorted(transform_keys()))} (`robust list dataset-transforms`)."
            ) from None
        sections[section] = {"name": entry.name, **own, **generic}
    top = {k: v for k, v in tree.items() if k not in ("method", "dataset", "model")}
    model = run_config_model()
    try:
        config = model.model_validate({**top, **sections})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("the run", exc, model)) from None
    if config.train.augment is not None:
        check_augmentation(config.train.augment)
    return Resolved(config, method_entry, dataset_entry, model_entry, notes, typed_method)


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def check_augmentation(kind: str) -> str:
    """``kind`` when an augmentation of that name is registered, else a clear error."""
    registry = get_registry()
    if registry.find("augmentation", kind) is None:
        raise ConfigError(
            f"Unknown augmentation {kind!r} (train.augment); expected one of {', '.join(registry.names('augmentation'))} "
            "(`robust list augmentations`). Plugins add more: bbox_crop_flip comes with robust-counterfactual."
        )
    return kind


def _transform_options(entry: Entry, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split off and validate the options of the registered dataset transforms that the dataset does
    not own itself."""
    from robust.datasets import split_transform_options, validate_transform_options

    config_cls = entry.load_config()
    fields = set(config_cls.model_fields) if config_cls is not None else set()
    own, transforms = split_transform_options(options, fields)
    return own, validate_transform_options(entry.name, transforms)


def _dataset_options(entry: Entry, given: dict[str, Any]) -> dict[str, Any]:
    """The dataset's options with defaults filled in (for preset templates); {} when they are invalid
    (the full validation below reports the problem)."""
    config_cls = entry.load_config()
    if config_cls is None:
        return {}
    # Only the dataset's own keys: transform options (mask_provider, frac, ...) are not its
    # fields, and validating them here would make every run that gives one lose its preset.
    own = {k: v for k, v in given.items() if k in config_cls.model_fields}
    try:
        return config_cls.model_validate(own).model_dump()
    except ValidationError:
        return {}


def _strip_record(record: dict[str, Any]) -> dict[str, Any]:
    """A stored config.json without the bookkeeping keys, usable as config input."""
    return {k: v for k, v in record.items() if k not in ("versions", "plugins")}
