"""LfF (Nam et al., NeurIPS 2020): Learning from Failure.

Two independent classifiers on the same batches. The biased one, f_B, is trained with GCE and
so amplifies the easy (spurious) cue. The debiased one, f_D, is trained with cross-entropy
weighted by the relative difficulty W(x) = L_B / (L_B + L_D) (per-sample loss EMAs, each
normalised by its class maximum), so samples f_B fails on, the bias-conflicting ones, dominate
its loss:

    L = GCE(f_B(x), y) + W(x) · CE(f_D(x), y)

Predictions are f_D's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from robust.api import Batch, MethodContext
from robust_disent.config import LfFConfig
from robust_disent.presets import LFF_PRESETS
from robust_disent.reweighting import RelativeDifficultyMethod


class LfF(RelativeDifficultyMethod):
    """A GCE-trained biased classifier teaches a debiased one which samples to weigh."""

    Config = LfFConfig
    config: LfFConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = LFF_PRESETS

    def __init__(self, config: LfFConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.biased = ctx.build_model()  # f_B
        self.debiased = ctx.build_model()  # f_D
        self.add_adam("biased", self.biased)
        self.add_adam("debiased", self.debiased)

    def loss_terms(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """The biased model's GCE and the debiased model's weighted CE (batch means); updates the EMAs."""
        logit_b = self.biased(batch.x)
        logit_d = self.debiased(batch.x)
        ce_b = F.cross_entropy(logit_b.float(), batch.y, reduction="none")
        ce_d = F.cross_entropy(logit_d.float(), batch.y, reduction="none")
        weight = self.difficulty(ce_b.detach(), ce_d.detach(), batch.index)
        return {
            "biased": self.gce(logit_b, batch.y).mean(),
            "debiased": (weight * ce_d).mean(),
            "weight": weight.mean(),
        }

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        terms = self.loss_terms(batch, step)
        loss = terms["biased"] + terms["debiased"]
        self.optimize(loss)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def predict(self, x: Tensor) -> Tensor:
        return self.debiased(x)
