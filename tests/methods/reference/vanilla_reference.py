"""A compact port of DisEnt's released vanilla step, to run beside ``robust_disent.vanilla.Vanilla``.

Ported from kakaoenterprise/Learning-Debiased-Disentangled (HEAD 7626f36): ``learner.py``
(``Learner.__init__``'s ``model_b`` and ``optimizer_b``, ``Learner.train_vanilla``'s loop body) and
``module/mlp.py`` (``MLP``). Logging, checkpoints and evaluation are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """module/mlp.py ``MLP``, input size and widths as arguments (DisEnt's: 3*28*28 -> 100, 100, 16)."""

    def __init__(self, num_classes: int, in_features: int = 3 * 28 * 28, widths: tuple[int, ...] = (100, 100, 16)):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        self.feature = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(x.size(0), -1) / 255
        return self.classifier(self.feature(x))


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
