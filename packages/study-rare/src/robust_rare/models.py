"""The study's architectures (``spurious_ml/models/torch_utils/archs/``), as registered models.

| name (alias: the reference's) | what |
|---|---|
| ``small-mlp`` (``MLP``) | flatten → 256 → K |
| ``mlp-v2`` (``MLPv2``) | flatten → 256 → 256 → K |
| ``large-mlp`` (``LargeMLP``) | flatten → 256 → 256 → 256 → K, the MNIST/Fashion model of the figures |
| ``large-mlp-v2`` (``LargeMLPv2``) | flatten → 512 → 512 → 512 → K |
| ``alt-resnet20`` (``altResNet20Norm02``) | CIFAR ResNet-20 with option-A shortcuts, Kaiming-normal init |

ReLU, no normalisation or dropout, PyTorch's default init for the MLPs: the core's ``mlp`` with the
study's widths. ``altResNet20Norm02`` standardises its input inside ``forward`` with CIFAR's mean and
std (0.2023, 0.1994, 0.2010); here the dataset's loader standardises (robust-datasets' CIFAR std is
0.247/0.244/0.262): the first convolution has no bias and is followed by BatchNorm, so the input's
scale does not change what the network computes. The study's aug01 (pad 4, random 32 crop,
horizontal flip) is ``--set train.augment=crop_flip`` on CIFAR-10 (whose crop padding is 4).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from robust.api import CifarResNetConfig, Classifier, MLPConfig, build_mlp, build_resnet20


def _mlp_config(widths: list[int], name: str) -> type[MLPConfig]:
    class Config(MLPConfig):
        hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(
            widths, min_length=1, description=f"Hidden widths ({name}: {widths})."
        )

    Config.__name__ = f"{name}Config"
    return Config


SmallMLPConfig = _mlp_config([256], "MLP")
MLPv2Config = _mlp_config([256, 256], "MLPv2")
LargeMLPConfig = _mlp_config([256, 256, 256], "LargeMLP")
LargeMLPv2Config = _mlp_config([512, 512, 512], "LargeMLPv2")


def small_mlp(config: MLPConfig | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return build_mlp(config or SmallMLPConfig(), num_classes, input_shape)


def mlp_v2(config: MLPConfig | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return build_mlp(config or MLPv2Config(), num_classes, input_shape)


def large_mlp(config: MLPConfig | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return build_mlp(config or LargeMLPConfig(), num_classes, input_shape)


def large_mlp_v2(config: MLPConfig | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return build_mlp(config or LargeMLPv2Config(), num_classes, input_shape)


def alt_resnet20(config: CifarResNetConfig | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    """The core's CIFAR ResNet-20 (option A) with the reference's Kaiming-normal Linear init."""
    model = build_resnet20(config, num_classes, input_shape)
    nn.init.kaiming_normal_(model.head.weight)
    return model
