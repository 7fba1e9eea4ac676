"""The plugin API: everything a plugin (a method, a dataset, a model, a command) may use from robust.

Import from here, never from the modules behind it: ``from robust.api import Method, Phase, hookimpl``.
What is not listed here is internal and may change in any release; an import-linter contract
(``nox -s lint``) keeps every package of this repository to it, and plugins pin a bounded
``robust-core`` version (``robust-core>=0.1,<0.2``).

Importing this module is cheap (no torch): the names are loaded on first use (PEP 562), so a
plugin's entry-point module can import ``hookimpl`` from here and ``robust --help`` stays fast.
``docs/plugins.md`` documents each name; a test checks that every name here resolves. Type checkers
and editors read the names from ``api.pyi`` (a stub beside this module).
"""

from __future__ import annotations

import importlib
from typing import Any

from robust.hookspecs import hookimpl

#: What the API exports, by the module it comes from (loaded on first use).
_EXPORTS: dict[str, str] = {
    # configs and errors
    "robust.config": "DatasetConfig MethodConfig ModelConfig Options RunConfig TrainConfig deep_merge nest validate_section",
    "robust.toml_values": "parse_set parse_value toml_literal",
    "robust.errors": "CheckpointError ConfigError DataError DeviceError NonFiniteLossError PluginError RobustError "
    "RunDirError UnknownNameError WriteError",
    # the method contract
    "robust.method": "Method MethodContext Phase",
    "robust.erm": "ERM ERMConfig make_optimizer make_scheduler RESNET50_IMAGENET",
    # data
    "robust.data": "Batch Split ArraySplit StreamSplit DatasetBundle DatasetInfo "
    "subset_split with_labels with_groups replace_splits",
    "robust.datasets": "load_dataset resolve_dataset_name",
    "robust.loader": "BatchLoader take_rows",
    "robust.augment": "crop_at random_flip shift_boxes",
    # models
    "robust.models.classifier": "Classifier build_registered_model",
    "robust.models.mlp": "MLPConfig build_mlp",
    "robust.models.resnet_cifar": "CifarResNetConfig build_resnet20",
    "robust.models.torchvision_resnet": "WeightsError",
    # runs and their files
    "robust.engine": "Run",
    "robust.resolve": "resolve_run_config",
    "robust.results": "RunDir check_output run_root",
    "robust.runlock": "RunLock",
    "robust.atomic": "atomic_write atomic_write_json atomic_write_text",
    "robust.checkpoint": "load_checkpoint save_checkpoint",
    "robust.trained": "load_trained_run trained_weights",
    # machinery
    "robust.device": "resolve_device",
    "robust.seeding": "generator seed_everything",
    "robust.distributed": "all_reduce_sum gather_rows",
    "robust.metrics": "agreement adjusted_rand_index",
    # registry and plugins
    "robust.registry": "get_registry Register",
    "robust.papers": "register_from_toml PaperResult",
    "robust.selection": "rule_labels",
    "robust.plugins": "plugin_distribution",
    "robust.paths": "data_root expand_user",
}
_LAZY: dict[str, str] = {name: f"{module}:{name}" for module, names in _EXPORTS.items() for name in names.split()}
_LAZY["distributed"] = "robust.distributed"  # the module: process groups, for commands that launch runs

__all__ = ["hookimpl", *_LAZY]


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
