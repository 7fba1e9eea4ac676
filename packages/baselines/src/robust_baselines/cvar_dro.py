"""CVaR DRO: minimise the conditional value at risk of the loss, the mean of the worst α fraction.

Levy et al.'s batch estimator (daniellevy/fast-dro ``robust_losses.py``, copied into SubpopBench as
``learning/joint_dro.py``; SubpopBench's ``CVaRDRO`` uses it with ``RobustLoss(alpha, 0, "cvar")``):
without regularisation the best response ``p`` puts 1/(αm) on the ⌊αm⌋ largest of the m losses and
the rest of the mass, 1 − ⌊αm⌋/(αm), on the next one; the loss is Σ p_i ℓ_i, ``p`` held fixed (no
gradient through the sort). No group labels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robust.api import ERM, Batch, MethodContext
from robust_baselines.config import CVaRDROConfig
from robust_baselines.presets import CVAR_DATASET_PRESETS, CVAR_PRESETS


@torch.no_grad()
def cvar_weights(losses: Tensor, alpha: float) -> Tensor:
    """The best response of the CVaR uncertainty set of size α to the batch's losses."""
    m = losses.shape[0]
    cutoff = int(alpha * m)
    surplus = 1.0 - cutoff / (alpha * m)
    p = torch.zeros_like(losses)
    order = torch.argsort(losses, descending=True)
    p[order[:cutoff]] = 1.0 / (alpha * m)
    if cutoff < m:
        p[order[cutoff]] = surplus
    return p


def cvar_loss(losses: Tensor, alpha: float) -> Tensor:
    """CVaR_α of the per-sample losses (1: their mean)."""
    return torch.dot(cvar_weights(losses, alpha), losses)


class CVaRDRO(ERM):
    """One classifier trained on the CVaR of each batch's per-sample losses."""

    Config = CVaRDROConfig
    config: CVaRDROConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = CVAR_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = CVAR_DATASET_PRESETS

    def __init__(self, config: CVaRDROConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        losses = self.loss(self.model(batch.x), batch.y).float()
        loss = cvar_loss(losses, self.config.alpha)
        self.optimize(loss, clip_grad_norm=self.config.clip_grad_norm)
        return {"loss": loss.detach(), "mean_loss": losses.detach().mean()}
