"""Multi-layer perceptron on flattened inputs: the Colored-MNIST backbone of LfF and DisEnt."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from robust.config import ModelConfig
from robust.models.classifier import Classifier


class MLPConfig(ModelConfig):
    """Options of the ``mlp`` model."""

    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        [100, 100, 100],
        min_length=1,
        description="Width of each hidden Linear+ReLU layer; the last one is the feature dimension (LfF: 3x100).",
    )
    input_scale: float = Field(
        1.0,
        description="Multiplier applied to the flattened input (DisEnt's reference MLP divides raw inputs by 255).",
    )


class MLPEncoder(nn.Module):
    """Flatten, scale, then Linear+ReLU layers; flattening lives here so ``features`` takes images."""

    def __init__(self, in_features: int, hidden_sizes: list[int], input_scale: float) -> None:
        super().__init__()
        self.input_scale = input_scale
        layers: list[nn.Module] = []
        for width in hidden_sizes:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return self.layers(x)


def build_mlp(config: MLPConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    """An MLP classifier whose features are the last hidden layer's activations."""
    config = MLPConfig.model_validate(config or {})
    encoder = MLPEncoder(math.prod(input_shape), list(config.hidden_sizes), config.input_scale)
    return Classifier(encoder, config.hidden_sizes[-1], num_classes)
