"""The contract every registered model meets: an encoder and a linear head.

Methods need more than logits: the penultimate representation (PruSC clusters it, DisEnt
concatenates two of them, the rare-correlation probes read it) and the class weights (CLP's
characteristics). So every model is ``head(features(x))`` with ``head`` an ``nn.Linear``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Classifier(nn.Module):
    """``encoder`` maps inputs to ``feature_dim`` features; ``head`` maps those to class logits."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate representation, shape ``(N, feature_dim)``."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def reset_head(self) -> None:
        """Re-initialise the head (last-layer retraining)."""
        self.head.reset_parameters()


def build_registered_model(entry: Any, options: dict[str, Any], num_classes: int, input_shape: tuple[int, int, int]):
    """A registered model (a registry entry) with ``options`` validated by its config class."""
    config_cls = entry.load_config()
    config = config_cls.model_validate(options) if config_cls is not None else None
    return entry.load()(config, num_classes=num_classes, input_shape=input_shape)
