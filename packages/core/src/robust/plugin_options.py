"""Options plugins own: the run's configuration model, extended by ``register_options`` and
``register_batch_transforms``.

The core's :class:`robust.config.TrainConfig` holds what the engine does; a plugin's option models
add ``train.*`` fields (a logger's switch, the rare study's input noise) or sections of their own.
The extended models are built from the registry once per registry (cached) and validate a run's
configuration in one pass, so a plugin option is typed and listed by ``robust info train`` like the
engine's own. Torch-free.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, Field, create_model

from robust.config import RunConfig, TrainConfig
from robust.errors import PluginError
from robust.registry import Entry, get_registry


def _option_models() -> list[tuple[Entry, str, type[BaseModel]]]:
    """``(entry, section, model)`` of every registered option model and batch transform."""
    registry = get_registry()
    found = []
    for entry in registry.entries("options"):
        found.append((entry, entry.metadata.get("section", "train"), entry.load()))
    for entry in registry.entries("batch_transform"):
        model = entry.load_config()
        if model is not None:
            found.append((entry, "train", model))
    return found


@cache
def _models(registry_id: int) -> tuple[type[TrainConfig], type[RunConfig], dict[str, str]]:
    train_fields: dict[str, Any] = {}
    owners: dict[str, str] = {name: "the engine" for name in TrainConfig.model_fields}
    sections: dict[str, Any] = {}
    for entry, section, model in _option_models():
        if section != "train":
            if section in RunConfig.model_fields or section in sections:
                raise PluginError(
                    f"{entry.owner} registers the options section {section!r}, which already exists; choose another name."
                )
            sections[section] = (model, Field(default_factory=model))
            owners[section] = entry.owner
            continue
        for name, field in model.model_fields.items():
            if name in owners:
                raise PluginError(
                    f"{entry.owner} registers the option train.{name}, which {owners[name]} already owns; rename it."
                )
            train_fields[name] = (field.annotation, field)
            owners[name] = entry.owner
    train = create_model("TrainConfig", __base__=TrainConfig, **train_fields) if train_fields else TrainConfig
    run = create_model("RunConfig", __base__=RunConfig, train=(train, Field(default_factory=train)), **sections)
    return train, run, owners


def train_config_model() -> type[TrainConfig]:
    """The engine's options plus every plugin's ``train.*`` options."""
    return _models(id(get_registry()))[0]


def run_config_model() -> type[RunConfig]:
    """The run configuration model with the plugins' options and sections."""
    return _models(id(get_registry()))[1]


def plugin_sections() -> tuple[str, ...]:
    """Top-level sections plugins registered (``register_options(..., section=NAME)``)."""
    return tuple(k for k in run_config_model().model_fields if k not in RunConfig.model_fields)


def active_batch_transforms(train: BaseModel) -> list[tuple[str, Any, BaseModel]]:
    """``(name, function, options)`` of the batch transforms a run switched on: those with an option
    set away from its default, in name order."""
    out = []
    values = train.model_dump()
    for entry in get_registry().entries("batch_transform"):
        model = entry.load_config()
        if model is None:
            continue
        options = model.model_validate({k: values[k] for k in model.model_fields if k in values})
        if options.model_dump() != model().model_dump():
            out.append((entry.name, entry.load(), options))
    return out
