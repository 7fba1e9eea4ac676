"""mixup (Zhang, Cisse, Dauphin and Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

Each step trains on convex combinations of pairs of examples from the batch::

    λ ~ Beta(α, α),  perm = a random permutation of the batch
    x̃ = λ·x + (1 − λ)·x[perm]
    loss = λ·CE(f(x̃), y) + (1 − λ)·CE(f(x̃), y[perm])

which equals the cross-entropy against the mixed one-hot label λ·y + (1 − λ)·y[perm]. One λ per
batch, as in the paper's reference code. α → 0 recovers ERM (λ = 1); α = 1 mixes uniformly.

This module imports torch; the plugin module registers it by reference (``"module:Class"``) so that
it is imported only when a run (or ``robust info mixup``) needs it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from robust.api import Batch, ERMConfig, Method, MethodContext, make_optimizer, make_scheduler


class MixupConfig(ERMConfig):
    """Options of ``mixup``: the mixing parameter, plus every optimiser option of ERM."""

    alpha: float = Field(
        0.2,
        ge=0,
        description="λ ~ Beta(alpha, alpha) mixes each batch with a permutation of itself; 0 turns mixup off (λ = 1).",
    )


def sample_lambda(alpha: float, sample_shape: tuple[int, ...] = ()) -> Tensor:
    """Mixing weights λ ~ Beta(α, α), drawn from torch's global generator (seeded and checkpointed
    by the engine, so runs are reproducible and resume exactly). α = 0 gives λ = 1 (no mixing)."""
    if alpha <= 0:
        return torch.ones(sample_shape)
    concentration = torch.tensor(float(alpha))
    return torch.distributions.Beta(concentration, concentration).sample(torch.Size(sample_shape))


class Mixup(Method):
    """One classifier trained on mixed pairs of inputs and labels; predicts like ERM."""

    Config = MixupConfig
    config: MixupConfig

    # mixup uses class labels only: the engine withholds group and bias labels from its batches.
    uses_group_labels: ClassVar[bool] = False

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper's CIFAR-10 recipe (their code: facebookresearch/mixup-cifar10). Pick a model with
        # --model; the paper used a pre-activation ResNet-18.
        "paper-cifar10": {
            "method": {
                "alpha": 1.0,
                "optimizer": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "schedule": "step",
                "milestones": [100, 150],
                "gamma": 0.1,
            },
            "train": {"epochs": 200, "batch_size": 128},
        },
    }

    def __init__(self, config: MixupConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.model = ctx.build_model()  # the run's model, on the run's device
        self.loss = ctx.build_loss(config.loss)  # per-sample loss: (logits, y) -> (N,)
        optimizer = make_optimizer(self.model.parameters(), config)
        # Registered optimizers (and schedules) are checkpointed and stepped by the engine.
        self.add_optimizer("model", optimizer, make_scheduler(optimizer, config, ctx.config.train.epochs))

    def sample(self, n: int, device: torch.device) -> tuple[float, Tensor]:
        """The mixing weight and the pairing of one batch of ``n`` samples."""
        lam = float(sample_lambda(self.config.alpha))
        return lam, torch.randperm(n, device=device)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor | float]:
        lam, perm = self.sample(len(batch), batch.x.device)
        mixed = lam * batch.x + (1 - lam) * batch.x[perm]
        logits = self.model(mixed)
        loss = (lam * self.loss(logits, batch.y) + (1 - lam) * self.loss(logits, batch.y[perm])).mean()
        self.optimize(loss, clip_grad_norm=self.config.clip_grad_norm)  # zero_grad, (scaled) backward, step
        return {"loss": loss.detach(), "lambda": lam}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)
