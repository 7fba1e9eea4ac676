"""JTT, Just Train Twice (Liu et al., ICML 2021; official code anniesch/jtt): no group labels.

Phases, each checkpointed (``--rerun PHASE`` reruns one and those after it):

1. ``identify``: ERM for T epochs (``identification_epochs``); not selectable, it is not the result;
2. ``error-set``: the training samples the identification model misclassifies, E (``error_set.csv``);
3. ``retrain``: a fresh model and optimiser trained on the training set with each sample of E
   repeated λ_up times in every epoch (``run_expt.py``: ``ConcatDataset([train, Subset(train,
   aug_indices * up_weight)])`` shuffled), i.e. the paper's J_up = λ_up Σ_E ℓ + Σ_{¬E} ℓ.

``robust run jtt --out DIR --rerun retrain --set lambda_up=20`` sweeps λ_up on the same error set.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robust.api import ERM, Batch, ConfigError, MethodContext, Phase, atomic_write_text, make_optimizer, make_scheduler
from robust_baselines.config import JTTConfig
from robust_baselines.presets import JTT_DATASET_PRESETS, JTT_PRESETS


def upsampled_indices(num_train: int, error_set: Tensor, copies: int) -> Tensor:
    """Every training index once, then the error set's indices ``copies - 1`` more times, tiled as
    ``list(aug_indices) * up_weight`` is: the dataset an epoch of the retraining permutes."""
    return torch.cat([torch.arange(num_train), error_set.repeat(copies - 1)])


class JTT(ERM):
    """Identification ERM → error set → the error set upsampled in a second training."""

    Config = JTTConfig
    config: JTTConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = JTT_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = JTT_DATASET_PRESETS

    def __init__(self, config: JTTConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.register_buffer("wrong", torch.zeros(ctx.num_train, dtype=torch.bool))
        self.register_buffer("pass_wrong", torch.zeros(ctx.num_train, dtype=torch.bool))
        # The identification epoch, a buffer: checkpointed, since a run resumed mid-epoch does not
        # call on_epoch_start again, and read on the device (no host sync per step).
        self.register_buffer("identify_epoch", torch.zeros((), dtype=torch.long))

    def phases(self) -> list[Phase]:
        return [
            Phase("identify", epochs=self.config.identification_epochs, select=False, optimizers=("model",)),
            Phase("error-set", run=self.find_error_set),
            Phase(
                "retrain",
                update=self.retrain_step,
                on_start=self.start_retraining,
                optimizers=("retrain",),
                epoch_indices=self.upsampled_order,
            ),
        ]

    # -- phase identify -------------------------------------------------------------------

    def on_epoch_start(self, epoch: int) -> None:
        self.identify_epoch.fill_(epoch)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """An ERM step; in epoch T it also records what the released code writes for the error set:
        the batch's predictions in train mode, before the step."""
        logits = self.model(batch.x)
        in_epoch_t = self.identify_epoch == self.config.identification_epochs - 1
        wrong = logits.detach().argmax(1) != batch.y
        self.pass_wrong[batch.index] = torch.where(in_epoch_t, wrong, self.pass_wrong[batch.index])
        loss = self.loss(logits, batch.y).mean()
        self.optimize(loss, clip_grad_norm=self.config.clip_grad_norm)
        return {"loss": loss.detach()}

    # -- phase error-set ------------------------------------------------------------------

    def find_error_set(self) -> dict[str, float]:
        """The samples the identification model gets wrong (a run phase: no_grad, eval mode)."""
        ctx = self.ctx
        if self.config.error_set_from == "training_pass":
            wrong = self.pass_wrong.clone()
        else:
            wrong = torch.zeros_like(self.wrong)
            for batch in ctx.batches("train"):
                wrong[batch.index] = self.model(batch.x).argmax(1) != batch.y
        self.wrong.copy_(wrong)
        size = int(wrong.sum())
        if size == 0:
            raise ConfigError(
                f"JTT's identification model misclassifies no training sample after {self.config.identification_epochs} "
                "epochs, so the error set is empty and the retraining would be ERM (anniesch/jtt#6). Identify "
                "earlier or with more regularisation: --rerun identify --set identification_epochs=N (or a larger "
                "weight_decay, as the paper's Waterbirds setting, wd 1.0)."
            )
        labels = ctx.data.splits["train"].labels.cpu()
        rows = "".join(f"{i},{int(labels[i])},{int(w)}\n" for i, w in enumerate(wrong.cpu().tolist()))
        atomic_write_text(ctx.run_dir / "error_set.csv", "index,label,wrong\n" + rows)
        agreement = ctx.group_agreement(wrong.long().cpu(), "train")
        detail = f"; vs the true groups: worst-group recall {agreement['worst_group_recall']:.3f}" if agreement else ""
        ctx.log(f"JTT error set: {size} of {ctx.num_train} training samples ({self.config.error_set_from}){detail}.")
        return {"size": size, **({"worst_group_recall": agreement["worst_group_recall"]} if agreement else {})}

    # -- phase retrain --------------------------------------------------------------------

    def copies(self) -> int:
        """How many times an error-set sample appears in a retraining epoch."""
        c = self.config
        return c.lambda_up + 1 if c.upweight_convention == "released" else c.lambda_up

    def start_retraining(self) -> None:
        """A fresh model and optimiser (the released code launches a new run for stage 2)."""
        self.model = self.ctx.build_model()
        self.remove_optimizer("model")  # stage 1's, for the network just replaced
        optimizer = make_optimizer(self.model.parameters(), self.config)
        self.add_optimizer("retrain", optimizer, make_scheduler(optimizer, self.config, self.ctx.epochs))

    def upsampled_order(self, epoch: int, generator: torch.Generator) -> Tensor:
        """A retraining epoch: every sample once and the error set ``copies()`` times, shuffled."""
        data = upsampled_indices(self.ctx.num_train, self.wrong.cpu().nonzero().squeeze(1), self.copies())
        return data[torch.randperm(len(data), generator=generator)]

    def retrain_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        loss = self.loss(self.model(batch.x), batch.y).mean()
        self.optimize(loss, "retrain", clip_grad_norm=self.config.clip_grad_norm)
        return {"loss": loss.detach()}
