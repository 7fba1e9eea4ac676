"""DisEnt (Lee et al., NeurIPS 2021): Learning Debiased Representation via Disentangled Feature Augmentation.

Two branches, intrinsic ``(E_i, C_i)`` and bias ``(E_b, C_b)`` (the reference's ``model_l`` and
``model_b``). Both classifiers read ``z = [z_i ; z_b]``, with gradients cut so that each loss
trains one encoder: ``C_i([z_i ; sg(z_b)])`` and ``C_b([sg(z_i) ; z_b])``. The bias branch learns
the easy attribute through GCE; the intrinsic branch learns with CE weighted by LfF's relative
difficulty W(x). From step ``curr_step`` on, z_b is permuted inside the batch to synthesise
bias-conflicting features, trained with the same losses (the bias branch then predicts the
swapped label). At test time the prediction is ``C_i([z_i ; z_b])`` of the sample itself.

    L_dis  = W·CE(C_i(z), y)      + λ_dis    · GCE(C_b(z), y)              (Eq. 2)
    L_swap = W·CE(C_i(z_swap), y) + λ_swap_b · GCE(C_b(z_swap), y_swap)    (Eq. 3)
    L      = L_dis + λ_swap · L_swap                                        (Eq. 4)
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import Batch, MethodContext
from robust_disent.config import DisEntConfig
from robust_disent.model import concatenated_feature_branch
from robust_disent.presets import DISENT_PRESETS
from robust_disent.reweighting import RelativeDifficultyMethod
from robust_disent.schedule import delayed_step_lr


class DisEnt(RelativeDifficultyMethod):
    """Disentangled feature augmentation on top of LfF's relative-difficulty reweighting."""

    Config = DisEntConfig
    config: DisEntConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = DISENT_PRESETS

    def __init__(self, config: DisEntConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.intrinsic = concatenated_feature_branch(ctx)  # E_i, C_i (the reference's model_l)
        self.bias = concatenated_feature_branch(ctx)  # E_b, C_b (model_b)
        schedule = None
        if config.use_lr_decay:
            schedule = functools.partial(
                delayed_step_lr, curr_step=config.curr_step, decay_step=config.lr_decay_step, gamma=config.lr_gamma
            )
        self.add_adam("intrinsic", self.intrinsic, schedule)
        self.add_adam("bias", self.bias, schedule)

    def swapping(self, step: int) -> bool:
        """Feature swapping is on strictly after ``curr_step`` (the reference's ``step > curr_step``)."""
        return step > self.config.curr_step

    def loss_terms(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """The four terms of Eq. 2-3 (batch means) and the weights; updates the loss EMAs."""
        x, y = batch.x, batch.y
        z_i = self.intrinsic.features(x)
        z_b = self.bias.features(x)
        logit_i = self.intrinsic.head(torch.cat([z_i, z_b.detach()], dim=1))
        logit_b = self.bias.head(torch.cat([z_i.detach(), z_b], dim=1))
        ce_i = F.cross_entropy(logit_i.float(), y, reduction="none")
        ce_b = F.cross_entropy(logit_b.float(), y, reduction="none")
        weight = self.difficulty(ce_b.detach(), ce_i.detach(), batch.index)  # W(x), Eq. 1
        terms = {
            "dis_conflict": (weight * ce_i).mean(),  # W(z) CE(C_i(z), y)
            "dis_align": self.gce(logit_b, y).mean(),  # GCE(C_b(z), y)
            "weight": weight.mean(),
        }
        if self.swapping(step):
            perm = torch.randperm(len(y), device=y.device)
            z_b_swap, y_swap = z_b[perm], y[perm]
            logit_swap_i = self.intrinsic.head(torch.cat([z_i, z_b_swap.detach()], dim=1))
            logit_swap_b = self.bias.head(torch.cat([z_i.detach(), z_b_swap], dim=1))
            # W of the original sample, also for its swapped features (as the reference).
            terms["swap_conflict"] = (weight * F.cross_entropy(logit_swap_i.float(), y, reduction="none")).mean()
            terms["swap_align"] = self.gce(logit_swap_b, y_swap).mean()
        return terms

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        c = self.config
        terms = self.loss_terms(batch, step)
        loss_dis = terms["dis_conflict"] + c.lambda_dis * terms["dis_align"]  # Eq. 2
        loss = loss_dis
        if "swap_conflict" in terms:
            loss_swap = terms["swap_conflict"] + c.lambda_swap_b * terms["swap_align"]  # Eq. 3
            loss = loss_dis + c.lambda_swap * loss_swap  # Eq. 4 (λ_swap counts as 0 before curr_step)
        self.optimize(loss)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def predict(self, x: Tensor) -> Tensor:
        """``C_i([z_i ; z_b])`` with the sample's own bias features."""
        return self.intrinsic.head(torch.cat([self.intrinsic.features(x), self.bias.features(x)], dim=1))

    def predict_bias(self, x: Tensor) -> Tensor:
        """``C_b([z_i ; z_b])``: what the bias branch predicts (a diagnostic, as the reference's model='bias')."""
        return self.bias.head(torch.cat([self.intrinsic.features(x), self.bias.features(x)], dim=1))
