"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of basic blocks, 16-32-64 channels,
parameter-free "option A" shortcuts, as in the common resnet20/resnet32 implementations
(e.g. akamaster/pytorch_resnet_cifar10, the Meta-Weight-Net ResNet-32)."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from robust.config import ModelConfig
from robust.models.classifier import Classifier


class CifarResNetConfig(ModelConfig):
    """Options of the ``resnet20`` and ``resnet32`` models."""

    width: int = Field(16, ge=1, description="Channels of the first stage; the stages use width, 2*width, 4*width.")


class ShortcutA(nn.Module):
    """Option A: subsample spatially and zero-pad the new channels, so the shortcut has no weights."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if needs_projection else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetEncoder(nn.Module):
    """Stem conv, three stages of ``blocks_per_stage`` blocks, global average pooling."""

    def __init__(self, blocks_per_stage: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        channels = width
        for i in range(3):
            out = width * 2**i
            blocks = [
                BasicBlock(channels if j == 0 else out, out, 2 if i > 0 and j == 0 else 1)
                for j in range(blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def build_cifar_resnet(
    depth: int, config: CifarResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """A CIFAR ResNet of ``depth = 6n + 2`` layers."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    config = CifarResNetConfig.model_validate(config or {})
    encoder = CifarResNetEncoder((depth - 2) // 6, input_shape[0], config.width)
    return Classifier(encoder, encoder.out_channels, num_classes)


def build_resnet20(
    config: CifarResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """ResNet-20: 3 stages of 3 basic blocks."""
    return build_cifar_resnet(20, config, num_classes, input_shape)


def build_resnet32(
    config: CifarResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """ResNet-32: 3 stages of 5 basic blocks (Meta-Weight-Net's backbone)."""
    return build_cifar_resnet(32, config, num_classes, input_shape)
