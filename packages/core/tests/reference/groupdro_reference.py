"""A compact port of Group DRO's released training step, to run beside ``robust.groupdro.GroupDRO``.

Ported from kohpangwei/group_DRO: ``loss.py`` (``LossComputer.__init__``, ``loss``,
``compute_group_avg``, ``compute_robust_loss``; the ``--robust`` path without ``--btl``) and
``train.py`` (``train``'s SGD with momentum 0.9, ``run_epoch``'s non-BERT training step). Kept: the
arithmetic, in the original order, including the in-place ``adjusted_loss += adj / sqrt(n_g)``
that also adds the adjustment to the returned loss's value (a constant: the gradient is
``sum_g q_g grad L_g`` either way). Left out: the running statistics, the exponential average
of group losses (only ``--btl`` reads it), ``.cuda()`` (here on the tensors' device).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LossComputer:
    """loss.py, robust (Group DRO) loss only."""

    def __init__(
        self,
        criterion: nn.Module,
        n_groups: int,
        group_counts: Tensor,
        adj: Tensor | None = None,
        step_size: float = 0.01,
        normalize_loss: bool = False,
    ) -> None:
        self.criterion = criterion
        self.n_groups = n_groups
        self.group_counts = group_counts.float()
        self.step_size = step_size
        self.normalize_loss = normalize_loss
        self.adj = adj.float() if adj is not None else torch.zeros(n_groups)
        self.adv_probs = torch.ones(n_groups) / n_groups

    def loss(self, yhat: Tensor, y: Tensor, group_idx: Tensor) -> Tensor:
        per_sample_losses = self.criterion(yhat, y)
        group_loss, group_count = self.compute_group_avg(per_sample_losses, group_idx)
        actual_loss, _ = self.compute_robust_loss(group_loss, group_count)
        return actual_loss

    def compute_robust_loss(self, group_loss: Tensor, group_count: Tensor) -> tuple[Tensor, Tensor]:
        adjusted_loss = group_loss
        if torch.all(self.adj > 0):
            adjusted_loss += self.adj / torch.sqrt(self.group_counts)
        if self.normalize_loss:
            adjusted_loss = adjusted_loss / (adjusted_loss.sum())
        self.adv_probs = self.adv_probs * torch.exp(self.step_size * adjusted_loss.data)
        self.adv_probs = self.adv_probs / (self.adv_probs.sum())
        robust_loss = group_loss @ self.adv_probs
        return robust_loss, self.adv_probs

    def compute_group_avg(self, losses: Tensor, group_idx: Tensor) -> tuple[Tensor, Tensor]:
        group_map = (group_idx == torch.arange(self.n_groups).unsqueeze(1).long()).float()
        group_count = group_map.sum(1)
        group_denom = group_count + (group_count == 0).float()  # avoid nans
        group_loss = (group_map @ losses.view(-1)) / group_denom
        return group_loss, group_count


class GroupDROReference:
    """train.py: SGD (momentum 0.9) on ``LossComputer.loss`` with a per-sample CE criterion."""

    def __init__(
        self,
        model: nn.Module,
        n_groups: int,
        group_counts: Tensor,
        *,
        lr: float,
        weight_decay: float,
        step_size: float,
        generalization_adjustment: float,
    ) -> None:
        self.model = model
        # train.py: one --generalization_adjustment value is repeated for every group.
        adj = torch.full((n_groups,), float(generalization_adjustment))
        criterion = nn.CrossEntropyLoss(reduction="none")  # run_expt.py
        self.loss_computer = LossComputer(criterion, n_groups, group_counts, adj=adj, step_size=step_size)
        self.optimizer = torch.optim.SGD(
            filter(lambda p: p.requires_grad, model.parameters()), lr=lr, momentum=0.9, weight_decay=weight_decay
        )

    def step(self, x: Tensor, y: Tensor, g: Tensor) -> Tensor:
        outputs = self.model(x)
        loss_main = self.loss_computer.loss(outputs, y, g)
        self.optimizer.zero_grad()
        loss_main.backward()
        self.optimizer.step()
        return loss_main.detach()
