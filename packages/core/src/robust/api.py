"""The plugin API: everything a plugin (a method, a dataset, a model, a command) may use from robust.

Import from here, never from the modules behind it: ``from robust.api import Method, Phase, hookimpl``.
What is not listed here is internal and may change in any release; an import-linter contract
(``nox -s lint``) keeps every package of this repository to it, and plugins pin a bounded
``robust-core`` version (``robust-core>=0.1,<0.2``).

Importing this module is cheap (no torch): the names are loaded on first use (PEP 562), so a
plugin's entry-point module can import ``hookimpl`` from here and ``robust --help`` stays fast.
``docs/plugins.md`` documents each name; a test checks that every name here resolves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robust.config import (
    DatasetConfig,
    MethodConfig,
    ModelConfig,
    Options,
    RunConfig,
    TrainConfig,
    deep_merge,
    nest,
    parse_set,
    parse_value,
    toml_literal,
    validate_section,
)
from robust.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    NonFiniteLossError,
    PluginError,
    RobustError,
    RunDirError,
    UnknownNameError,
    WriteError,
)
from robust.hookspecs import hookimpl

#: Names loaded on first use: ``name -> "module:attribute"`` (``module`` alone for a module).
_LAZY: dict[str, str] = {
    # the method contract
    "Method": "robust.method:Method",
    "MethodContext": "robust.method:MethodContext",
    "Phase": "robust.method:Phase",
    "ERM": "robust.erm:ERM",
    "ERMConfig": "robust.erm:ERMConfig",
    "make_optimizer": "robust.erm:make_optimizer",
    "make_scheduler": "robust.erm:make_scheduler",
    "RESNET50_IMAGENET": "robust.erm:RESNET50_IMAGENET",
    # data
    "Batch": "robust.data:Batch",
    "Split": "robust.data:Split",
    "ArraySplit": "robust.data:ArraySplit",
    "StreamSplit": "robust.data:StreamSplit",
    "DatasetBundle": "robust.data:DatasetBundle",
    "DatasetInfo": "robust.data:DatasetInfo",
    "subset_split": "robust.data:subset_split",
    "with_labels": "robust.data:with_labels",
    "with_groups": "robust.data:with_groups",
    "replace_splits": "robust.data:replace_splits",
    "load_dataset": "robust.datasets:load_dataset",
    "resolve_dataset_name": "robust.datasets:resolve_dataset_name",
    "BatchLoader": "robust.loader:BatchLoader",
    "crop_at": "robust.augment:crop_at",
    "random_flip": "robust.augment:random_flip",
    "shift_boxes": "robust.augment:shift_boxes",
    # models
    "Classifier": "robust.models.classifier:Classifier",
    "build_registered_model": "robust.models.classifier:build_registered_model",
    "MLPConfig": "robust.models.mlp:MLPConfig",
    "build_mlp": "robust.models.mlp:build_mlp",
    "CifarResNetConfig": "robust.models.resnet_cifar:CifarResNetConfig",
    "build_resnet20": "robust.models.resnet_cifar:build_resnet20",
    "WeightsError": "robust.models.torchvision_resnet:WeightsError",
    # runs and their files
    "Run": "robust.engine:Run",
    "resolve_run_config": "robust.resolve:resolve_run_config",
    "RunDir": "robust.results:RunDir",
    "check_output": "robust.results:check_output",
    "run_root": "robust.results:run_root",
    "RunLock": "robust.runlock:RunLock",
    "atomic_write": "robust.atomic:atomic_write",
    "atomic_write_json": "robust.atomic:atomic_write_json",
    "atomic_write_text": "robust.atomic:atomic_write_text",
    "load_checkpoint": "robust.checkpoint:load_checkpoint",
    "save_checkpoint": "robust.checkpoint:save_checkpoint",
    "load_trained_run": "robust.trained:load_trained_run",
    "trained_weights": "robust.trained:trained_weights",
    # machinery
    "resolve_device": "robust.device:resolve_device",
    "generator": "robust.seeding:generator",
    "seed_everything": "robust.seeding:seed_everything",
    "distributed": "robust.distributed",
    "all_reduce_sum": "robust.distributed:all_reduce_sum",
    "gather_rows": "robust.distributed:gather_rows",
    "agreement": "robust.metrics:agreement",
    "adjusted_rand_index": "robust.metrics:adjusted_rand_index",
    # registry and plugins
    "get_registry": "robust.registry:get_registry",
    "Register": "robust.registry:Register",
    "register_from_toml": "robust.papers:register_from_toml",
    "plugin_distribution": "robust.plugins:plugin_distribution",
    "data_root": "robust.paths:data_root",
    "expand_user": "robust.paths:expand_user",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetConfig",
    "DeviceError",
    "MethodConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "Options",
    "PluginError",
    "RobustError",
    "RunConfig",
    "RunDirError",
    "TrainConfig",
    "UnknownNameError",
    "WriteError",
    "deep_merge",
    "hookimpl",
    "nest",
    "parse_set",
    "parse_value",
    "toml_literal",
    "validate_section",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(
            f"robust.api has no {name!r}: it is not part of the plugin API (docs/plugins.md lists what is)."
        )
    module_name, _, attr = target.partition(":")
    value = importlib.import_module(module_name)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    pass
