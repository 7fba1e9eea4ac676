"""Group DRO (Sagawa et al., 2020, "Distributionally Robust Neural Networks for Group Shifts"):
minimise the worst group's expected loss by online mirror ascent on group weights ``q``.

The reference every group-annotated comparison includes, and the consumer of groups that
``robust discover`` infers (``--set dataset.groups=FILE``). As the authors' ``loss.py``: per-group
mean losses of the batch, ``q_g ← q_g · exp(η_q (L_g + C / √n_g))`` renormalised (η_q =
``step_size``, C = ``generalization_adjustment``, n_g the group's training count), loss ``Σ_g q_g
L_g``; their README's command also samples batches with weights 1/n_g (``reweight_groups``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from robust.data import Batch
from robust.distributed import all_reduce_sum
from robust.erm import ERM, ERMConfig
from robust.errors import ConfigError
from robust.method import MethodContext


class GroupDROConfig(ERMConfig):
    step_size: float = Field(0.01, gt=0, description="η_q, the group weights' step size (the authors' default).")
    generalization_adjustment: float = Field(
        0.0, ge=0, description="C: adds C/√n_g to each group's loss in the q update (0 in the authors' commands)."
    )
    reweight_groups: bool = Field(
        True, description="Sample training batches with weights 1/n_g (with replacement), as the authors' commands."
    )


class GroupDRO(ERM):
    """One classifier, trained on the q-weighted group losses."""

    Config = GroupDROConfig
    config: GroupDROConfig
    uses_group_labels: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "synthetic": ERM.presets["synthetic"],
        # group_DRO README, Waterbirds: lr 1e-5, wd 1.0, batch 128, 300 epochs, --reweight_groups --robust.
        "waterbirds": {
            "method": {"optimizer": "sgd", "lr": 1e-5, "momentum": 0.9, "weight_decay": 1.0},
            "train": {"batch_size": 128, "epochs": 300},
        },
        # group_DRO README, CelebA: lr 1e-5, wd 0.1, batch 128, 50 epochs.
        "celeba": {
            "method": {"optimizer": "sgd", "lr": 1e-5, "momentum": 0.9, "weight_decay": 0.1},
            "train": {"batch_size": 128, "epochs": 50},
        },
    }
    dataset_presets: ClassVar[dict[str, str]] = ERM.dataset_presets

    def __init__(self, config: GroupDROConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        groups = ctx.data.splits["train"].groups
        if groups is None:
            raise ConfigError(
                f"groupdro needs group labels on the training split, and dataset {ctx.info.name!r} has none. Give "
                "it inferred groups: `robust discover --from RUN_DIR --out groups.csv` on an ERM run of this "
                "dataset, then --set dataset.groups=groups.csv."
            )
        self.num_groups = ctx.info.group_count(groups)
        counts = torch.bincount(groups, minlength=self.num_groups).float()
        self.register_buffer("group_counts", counts, persistent=False)
        self.register_buffer("q", torch.full((self.num_groups,), 1.0 / self.num_groups))
        self._train_groups = groups

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor | None:
        if not self.config.reweight_groups:
            return None
        weights = (1.0 / self.group_counts.cpu().clamp_min(1.0))[self._train_groups]
        return torch.multinomial(weights, len(weights), replacement=True, generator=generator)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        losses = self.loss(self.model(batch.x), batch.y)
        group = batch.group
        sums = torch.zeros(self.num_groups, device=losses.device).index_add(0, group, losses.float())
        counts = torch.zeros(self.num_groups, device=losses.device).index_add(0, group, torch.ones_like(losses))
        group_loss = sums / counts.clamp_min(1.0)
        with torch.no_grad():  # q follows the whole global batch's group losses (every process alike)
            batch_sums = all_reduce_sum(torch.stack([sums.detach(), counts]))
            observed = batch_sums[0] / batch_sums[1].clamp_min(1.0)
            adjusted = observed + self.config.generalization_adjustment / self.group_counts.clamp_min(1.0).sqrt()
            self.q.mul_(torch.exp(self.config.step_size * adjusted))
            self.q.div_(self.q.sum())
        loss = group_loss @ self.q
        self.optimize(loss, clip_grad_norm=self.config.clip_grad_norm)
        return {"loss": loss.detach(), "worst_group_loss": observed[batch_sums[1] > 0].max()}
