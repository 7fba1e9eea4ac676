"""Per-sample losses. No reduction: methods weight, select or group samples before averaging."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from robust.config import Options

LossFn = Callable[[Tensor, Tensor], Tensor]


class CrossEntropyConfig(Options):
    """Options of the ``ce`` loss."""

    label_smoothing: float = Field(
        0.0, ge=0.0, le=1.0, description="Mass spread uniformly over all classes (0 = plain cross-entropy)."
    )


def cross_entropy(config: CrossEntropyConfig | dict | None = None) -> LossFn:
    """``loss(logits (N, C), targets (N,) int) -> (N,)`` cross-entropy of each sample."""
    config = CrossEntropyConfig.model_validate(config or {})
    smoothing = config.label_smoothing

    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, reduction="none", label_smoothing=smoothing)

    return loss
