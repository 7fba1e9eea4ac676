"""A compact port of DisEnt's released vanilla step, to run beside ``robust_disent.vanilla.Vanilla``.

Ported from kakaoenterprise/Learning-Debiased-Disentangled (HEAD 7626f36): ``learner.py``
(``Learner.__init__``'s ``model_b`` and ``optimizer_b``, ``Learner.train_vanilla``'s loop body) and
``module/mlp.py`` (``MLP``). Logging, checkpoints and evaluation are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .lff_reference import MLP as LfFMLP


class MLP(LfFMLP):
    """module/mlp.py ``MLP``: DisEnt's file keeps LfF's class (ported in lff_reference), with DisEnt's widths."""

    def __init__(self, num_classes: int, in_features: int = 3 * 28 * 28, widths: tuple[int, ...] = (100, 100, 16)):
        super().__init__(num_classes, in_features, widths)


class VanillaReference:
    """``train_vanilla``: mean cross-entropy, Adam, no schedule."""

    def __init__(self, model_b: nn.Module, lr: float, weight_decay: float = 0.0) -> None:
        self.model_b = model_b
        self.optimizer_b = torch.optim.Adam(model_b.parameters(), lr=lr, weight_decay=weight_decay)
        self.criterion = nn.CrossEntropyLoss(reduction="none")

    def step(self, data: Tensor, label: Tensor) -> Tensor:
        logit_b = self.model_b(data)
        loss = self.criterion(logit_b, label).mean()
        self.optimizer_b.zero_grad()
        loss.backward()
        self.optimizer_b.step()
        return loss.detach()
