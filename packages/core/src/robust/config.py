"""Typed run configuration: one pydantic model per section, merged from several sources.

A run's config is a tree of sections::

    seed, device, preset, data_root     (top level)
    [method]   name + the method's options   (the method class's ``Config``)
    [dataset]  name + the dataset's options
    [model]    name + the model's options
    [train]    the engine's options (:class:`TrainConfig`)

Sources, later ones winning: the pydantic defaults, the method's preset (picked by
``preset=NAME`` or from the dataset), ``--config FILE.toml``, ``--set key=value`` (repeatable),
then the dedicated CLI flags (``--epochs``, ``--seed``...). An unprefixed ``--set`` key is
looked up in the method's options, then the engine's, then the top level.
This module does not import torch.
"""

from __future__ import annotations

import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robust.errors import ConfigError
from robust.toml_values import parse_set, parse_value, toml_literal  # noqa: F401  (part of this module's interface)


class Options(BaseModel):
    """Base for every options model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class MethodConfig(Options):
    """Base for a method's options."""


class DatasetConfig(Options):
    """Base for a dataset's options."""


class ModelConfig(Options):
    """Base for a model's options."""


class TrainConfig(Options):
    """What the engine does, whatever the method."""

    epochs: int = Field(10, ge=1, description="Training epochs (ignored when `steps` is set).")
    steps: int | None = Field(None, ge=1, description="Total optimisation steps; overrides `epochs`.")
    batch_size: int = Field(64, ge=1, description="Training mini-batch size.")
    eval_batch_size: int = Field(512, ge=1, description="Mini-batch size for evaluation.")
    eval_every: int = Field(1, ge=1, description="Evaluate on val and test every N epochs.")
    eval_every_steps: int | None = Field(
        None, ge=1, description="Evaluate every N steps instead (for step-based schedules)."
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=1,
        description="Checkpoint every N steps (resumable mid-epoch) instead of after each epoch.",
    )
    augment: str | None = Field(
        None,
        description="Training augmentation on the device, a registered one (`robust list augmentations`: none, "
        "flip, crop_flip, crop_flip_reflect, and those plugins add); None = the dataset's.",
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision: auto = bf16 on GPUs that support it, fp16 otherwise, off on CPU."
    )
    deterministic: bool = Field(False, description="Use deterministic algorithms (slower on GPU).")
    channels_last: bool = Field(
        True,
        description="Convolution weights, and so activations, in channels-last layout: what GPU tensor cores want, "
        "and on CPUs about 1.7x the cnn's steps/s (PyTorch's NCHW max-pooling is slow there). Off: the default "
        "layout, for results bitwise equal to runs made before the option existed.",
    )
    sync_batchnorm: bool = Field(
        False,
        description="In a run over several GPUs, BatchNorm normalises with the statistics of the global batch "
        "(SyncBatchNorm) instead of each process's share (GPUs only).",
    )
    data_on_device: Literal["auto", "yes", "no"] = Field(
        "auto", description="Hold in-memory datasets on the device and batch by index (auto: when they fit)."
    )
    num_workers: int = Field(2, ge=0, description="DataLoader workers for datasets that stream from disk.")
    log_every: int = Field(25, ge=1, description="Update progress and check the loss is finite every N steps.")
    keep_best: bool = Field(
        True, description="Keep model weights of the best evaluation under each val selection rule."
    )
    init_from: str | None = Field(
        None,
        description="Start the classifier from the one another run trained (RUN_DIR, or RUN_DIR:CHECKPOINT with "
        "CHECKPOINT last, a selection rule or phase-NAME): fine-tuning, continued training.",
    )


class RunConfig(Options):
    """The fully resolved configuration of one run (what ``config.json`` holds)."""

    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="Random seed for weights, data order and augmentation (0 to 2**63 - 1)."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    preset: str | None = Field(None, description="A preset of the method (see `robust info METHOD`).")
    data_root: str | None = Field(
        None, description="Where datasets live (default: $ROBUST_DATA, then the user data dir)."
    )
    train_attr: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="Group labels of the training data: yes (to a method that uses them), no (withheld; a method "
        "that needs them is refused), auto (yes when the method uses them).",
    )
    val_attr: Literal["yes", "no"] = Field(
        "yes",
        description="Group labels of the validation split: yes (selection by val worst-group accuracy), no "
        "(withheld from the method and from selection: val worst-class accuracy).",
    )
    method: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @property
    def method_name(self) -> str:
        return self.method["name"]

    @property
    def dataset_name(self) -> str:
        return self.dataset["name"]

    @property
    def model_name(self) -> str:
        return self.model["name"]


TOP_LEVEL_KEYS = ("seed", "device", "preset", "data_root", "train_attr", "val_attr")
SECTIONS = ("method", "dataset", "model", "train")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file, with an error that names the file and the problem."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {str(path)!r} does not exist. Pass an existing TOML file to --config."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read config file {str(path)!r}: {exc}. Pass a readable TOML file to --config."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {str(path)!r} is not valid TOML ({exc}). Expected sections such as "
            "[method], [dataset], [model] and [train] with key = value lines."
        ) from None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``update`` merged into ``base``, recursively for nested dicts."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nest(path: list[str], value: Any) -> dict[str, Any]:
    tree: Any = value
    for part in reversed(path):
        tree = {part: tree}
    return tree


def option_names(model: type[BaseModel] | None) -> set[str]:
    """The names ``--set`` accepts for a model's options: the fields and their alias choices (the name a
    paper's code uses, kept beside ours)."""
    names: set[str] = set()
    for name, field in (model.model_fields if model is not None else {}).items():
        names.add(name)
        names.update(c for c in getattr(field.validation_alias, "choices", ()) if isinstance(c, str))
    return names


def route_set_key(
    path: list[str],
    method_fields: set[str],
    train_fields: set[str] | None = None,
    sections: tuple[str, ...] = (),
) -> list[str]:
    """Where an unprefixed ``--set`` key goes: method options, then engine (with the plugins' ``train.*``
    options, ``train_fields``), then top level; ``sections`` are the plugins' own sections."""
    train_fields = set(TrainConfig.model_fields) if train_fields is None else train_fields
    if path[0] in SECTIONS or path[0] in TOP_LEVEL_KEYS or path[0] in sections:
        return path
    if path[0] in method_fields:
        return ["method", *path]
    if path[0] in train_fields:
        return ["train", *path]
    raise ConfigError(
        f"Unknown option {'.'.join(path)!r}. Valid unprefixed keys are the method's options "
        f"({', '.join(sorted(method_fields)) or 'none'}), the engine's "
        f"({', '.join(sorted(train_fields))}) and {', '.join(TOP_LEVEL_KEYS)}; prefix with "
        f"dataset. or model.{''.join(f' or {s}.' for s in sections)} for those sections. `robust info NAME` lists "
        "each section's options."
    )


def validate_section(section: str, name: str, options: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """Check one section's options against its pydantic model; return them with defaults filled in."""
    typed = validate_typed(section, name, options, model)
    return typed.model_dump(mode="json") if typed is not None else {}


def validate_typed(section: str, name: str, options: dict[str, Any], model: type[BaseModel] | None) -> BaseModel | None:
    """One section's options as its typed model (None when it takes none), or a clear error."""
    if model is None:
        if options:
            raise ConfigError(f"The {section} {name!r} takes no options, but got {', '.join(sorted(options))}.")
        return None
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(f"{section} {name!r}", exc, model)) from None


def describe_validation_error(where: str, exc: ValidationError, model: type[BaseModel]) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(options)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc!r} is not an option")
        else:
            problems.append(f"{loc!r}: {err['msg']} (got {err.get('input')!r})")
    valid = ", ".join(f"{k} ({_type_name(f.annotation)})" for k, f in model.model_fields.items())
    return f"Invalid options for {where}: {'; '.join(problems)}. Valid options: {valid or 'none'}."


def _type_name(annotation: Any) -> str:
    """A type as a user reads it: ``"auto" | "off"`` for a Literal (its allowed values), ``int | None``,
    ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(shown_value(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None and args:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def shown_value(value: Any) -> str:
    """A value as it is typed in TOML and ``--set`` (strings in double quotes), else its repr (None)."""
    try:
        return toml_literal(value)
    except ConfigError:
        return repr(value)


def schema_rows(model: type[BaseModel] | None) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for ``robust info``."""
    if model is None:
        return []
    rows = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append((name, _type_name(field.annotation), repr(default), field.description or ""))
    return rows
