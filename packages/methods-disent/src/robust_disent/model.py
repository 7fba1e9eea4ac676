"""DisEnt's two branches: a registered model whose head reads both branches' features.

Each branch ``(E, C)`` is any registered model (a :class:`robust.models.Classifier`, so
``features`` is its encoder) whose head is replaced by ``Linear(2 * feature_dim, classes)``: the
classifier of either branch sees ``z = [z_i ; z_b]``. This is the reference's ``fc`` of width
1024 (ResNet-18) or 32 (the 16-d MLP), without its forward hook on ``avgpool``.
"""

from __future__ import annotations

from torch import nn

from robust.api import Classifier, ConfigError, MethodContext


def concatenated_feature_branch(ctx: MethodContext) -> Classifier:
    """The run's model, its head taking the concatenation of two branches' features."""
    model = ctx.build_model()
    if not isinstance(model, Classifier):
        raise ConfigError(
            f"DisEnt needs a model with an encoder and a linear head (robust.models.Classifier); the configured "
            f"model builds a {type(model).__name__}. Choose a registered model such as mlp or resnet18 (--model)."
        )
    model.head = nn.Linear(2 * model.feature_dim, model.num_classes).to(next(model.parameters()).device)
    return model
