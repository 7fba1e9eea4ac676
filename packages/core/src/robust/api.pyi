"""Type stub of robust.api: the names the plugin API re-exports (resolved lazily at run time)."""

from robust import distributed as distributed
from robust.atomic import (
    atomic_write as atomic_write,
)
from robust.atomic import (
    atomic_write_json as atomic_write_json,
)
from robust.atomic import (
    atomic_write_text as atomic_write_text,
)
from robust.augment import crop_at as crop_at
from robust.augment import random_flip as random_flip
from robust.augment import shift_boxes as shift_boxes
from robust.checkpoint import load_checkpoint as load_checkpoint
from robust.checkpoint import save_checkpoint as save_checkpoint
from robust.config import (
    DatasetConfig as DatasetConfig,
)
from robust.config import (
    MethodConfig as MethodConfig,
)
from robust.config import (
    ModelConfig as ModelConfig,
)
from robust.config import (
    Options as Options,
)
from robust.config import (
    RunConfig as RunConfig,
)
from robust.config import (
    TrainConfig as TrainConfig,
)
from robust.config import (
    deep_merge as deep_merge,
)
from robust.config import (
    nest as nest,
)
from robust.config import (
    parse_set as parse_set,
)
from robust.config import (
    parse_value as parse_value,
)
from robust.config import (
    toml_literal as toml_literal,
)
from robust.config import (
    validate_section as validate_section,
)
from robust.data import (
    ArraySplit as ArraySplit,
)
from robust.data import (
    Batch as Batch,
)
from robust.data import (
    DatasetBundle as DatasetBundle,
)
from robust.data import (
    DatasetInfo as DatasetInfo,
)
from robust.data import (
    Split as Split,
)
from robust.data import (
    StreamSplit as StreamSplit,
)
from robust.data import (
    replace_splits as replace_splits,
)
from robust.data import (
    subset_split as subset_split,
)
from robust.data import (
    with_groups as with_groups,
)
from robust.data import (
    with_labels as with_labels,
)
from robust.datasets import load_dataset as load_dataset
from robust.datasets import resolve_dataset_name as resolve_dataset_name
from robust.device import resolve_device as resolve_device
from robust.distributed import all_reduce_sum as all_reduce_sum
from robust.distributed import gather_rows as gather_rows
from robust.engine import Run as Run
from robust.erm import (
    ERM as ERM,
)
from robust.erm import (
    RESNET50_IMAGENET as RESNET50_IMAGENET,
)
from robust.erm import (
    ERMConfig as ERMConfig,
)
from robust.erm import (
    make_optimizer as make_optimizer,
)
from robust.erm import (
    make_scheduler as make_scheduler,
)
from robust.errors import (
    CheckpointError as CheckpointError,
)
from robust.errors import (
    ConfigError as ConfigError,
)
from robust.errors import (
    DataError as DataError,
)
from robust.errors import (
    DeviceError as DeviceError,
)
from robust.errors import (
    NonFiniteLossError as NonFiniteLossError,
)
from robust.errors import (
    PluginError as PluginError,
)
from robust.errors import (
    RobustError as RobustError,
)
from robust.errors import (
    RunDirError as RunDirError,
)
from robust.errors import (
    UnknownNameError as UnknownNameError,
)
from robust.errors import (
    WriteError as WriteError,
)
from robust.hookspecs import hookimpl as hookimpl
from robust.loader import BatchLoader as BatchLoader
from robust.loader import take_rows as take_rows
from robust.method import Method as Method
from robust.method import MethodContext as MethodContext
from robust.method import Phase as Phase
from robust.metrics import adjusted_rand_index as adjusted_rand_index
from robust.metrics import agreement as agreement
from robust.models.classifier import Classifier as Classifier
from robust.models.classifier import build_registered_model as build_registered_model
from robust.models.mlp import MLPConfig as MLPConfig
from robust.models.mlp import build_mlp as build_mlp
from robust.models.resnet_cifar import CifarResNetConfig as CifarResNetConfig
from robust.models.resnet_cifar import build_resnet20 as build_resnet20
from robust.models.torchvision_resnet import WeightsError as WeightsError
from robust.papers import PaperResult as PaperResult
from robust.papers import register_from_toml as register_from_toml
from robust.paths import data_root as data_root
from robust.paths import expand_user as expand_user
from robust.plugins import plugin_distribution as plugin_distribution
from robust.registry import Register as Register
from robust.registry import get_registry as get_registry
from robust.resolve import resolve_run_config as resolve_run_config
from robust.results import RunDir as RunDir
from robust.results import check_output as check_output
from robust.results import run_root as run_root
from robust.runlock import RunLock as RunLock
from robust.seeding import generator as generator
from robust.seeding import seed_everything as seed_everything
from robust.selection import rule_labels as rule_labels
from robust.trained import load_trained_run as load_trained_run
from robust.trained import trained_weights as trained_weights

__all__: list[str]
