"""A small convolutional network for quick experiments on small images."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from robust.config import ModelConfig
from robust.models.classifier import Classifier


class CNNConfig(ModelConfig):
    """Options of the ``cnn`` model."""

    width: int = Field(32, ge=1, description="Channels of the first block; each later block doubles them.")
    depth: int = Field(4, ge=1, le=8, description="Number of conv-BN-ReLU-maxpool blocks.")


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, BN, ReLU, 2x2 max-pool. ``ceil_mode`` keeps a 1x1 map at 1x1, so small or odd
    sizes (16x16, 28x28) never shrink to zero."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
    )


def build_cnn(config: CNNConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    """``depth`` blocks then global average pooling; features have ``width * 2**(depth-1)`` dims."""
    config = CNNConfig.model_validate(config or {})
    blocks: list[nn.Module] = []
    channels = input_shape[0]
    for i in range(config.depth):
        out = config.width * 2**i
        blocks.append(conv_block(channels, out))
        channels = out
    encoder = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(encoder, channels, num_classes)
