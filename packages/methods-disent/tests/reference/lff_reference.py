"""A compact port of LfF's released training step, to run beside ``robust_disent.lff.LfF``.

Ported from alinlab/LfF (HEAD e66796e): ``train.py`` (the loop body of ``train``), ``util.py``
(``EMA``), ``module/loss.py`` (``GeneralizedCELoss``) and ``module/mlp.py`` (``MLP``). Only the
arithmetic is kept: the NaN checks, logging and evaluation are left out, and the EMA stays on the
CPU as in the original. DisEnt's repository copies ``EMA`` and ``GeneralizedCELoss`` from here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GeneralizedCELoss(nn.Module):
    """module/loss.py: CE times the detached ``q * p_y^q`` (not the textbook GCE value)."""

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        self.q = q

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        p = F.softmax(logits, dim=1)
        p_y = torch.gather(p, 1, torch.unsqueeze(targets, 1))
        loss_weight = (p_y.squeeze().detach() ** self.q) * self.q
        return F.cross_entropy(logits, targets, reduction="none") * loss_weight


class EMA:
    """util.py: per-sample loss EMA; the first visit copies (``1 - alpha * updated`` is then 1)."""

    def __init__(self, label: Tensor, alpha: float = 0.9) -> None:
        self.label = label
        self.alpha = alpha
        self.parameter = torch.zeros(label.size(0))
        self.updated = torch.zeros(label.size(0))

    def update(self, data: Tensor, index: Tensor) -> None:
        self.parameter[index] = self.alpha * self.parameter[index] + (1 - self.alpha * self.updated[index]) * data
        self.updated[index] = 1

    def max_loss(self, label: int) -> Tensor:
        label_index = np.where(self.label == label)[0]
        return self.parameter[label_index].max()


class MLP(nn.Module):
    """module/mlp.py, with the input size and widths as arguments (LfF's: 3*28*28 -> 100, 100, 100)."""

    def __init__(self, num_classes: int, in_features: int = 3 * 28 * 28, widths: tuple[int, ...] = (100, 100, 100)):
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


class LfFReference:
    """train.py: a GCE-trained ``model_b`` and a ``model_d`` trained on CE weighted by relative difficulty."""

    def __init__(
        self,
        model_b: nn.Module,
        model_d: nn.Module,
        train_target_attr: Tensor,
        num_classes: int,
        lr: float,
        weight_decay: float = 0.0,
        ema_alpha: float = 0.7,
        q: float = 0.7,
    ) -> None:
        self.model_b, self.model_d, self.num_classes = model_b, model_d, num_classes
        # main_optimizer_tag == "Adam" (the Colored MNIST and Corrupted CIFAR-10 configs).
        self.optimizer_b = torch.optim.Adam(model_b.parameters(), lr=lr, weight_decay=weight_decay)
        self.optimizer_d = torch.optim.Adam(model_d.parameters(), lr=lr, weight_decay=weight_decay)
        self.criterion = nn.CrossEntropyLoss(reduction="none")
        self.bias_criterion = GeneralizedCELoss(q)  # train.py: GeneralizedCELoss() (q = 0.7)
        self.sample_loss_ema_b = EMA(train_target_attr.long(), alpha=ema_alpha)  # train.py: alpha=0.7
        self.sample_loss_ema_d = EMA(train_target_attr.long(), alpha=ema_alpha)

    def step(self, index: Tensor, data: Tensor, label: Tensor) -> Tensor:
        """One iteration of the loop; returns the loss it minimised."""
        logit_b = self.model_b(data)
        logit_d = self.model_d(data)
        loss_b = self.criterion(logit_b, label).cpu().detach()
        loss_d = self.criterion(logit_d, label).cpu().detach()

        self.sample_loss_ema_b.update(loss_b, index)
        self.sample_loss_ema_d.update(loss_d, index)

        loss_b = self.sample_loss_ema_b.parameter[index].clone().detach()
        loss_d = self.sample_loss_ema_d.parameter[index].clone().detach()
        label_cpu = label.cpu()
        for c in range(self.num_classes):
            class_index = np.where(label_cpu == c)[0]
            loss_b[class_index] /= self.sample_loss_ema_b.max_loss(c)
            loss_d[class_index] /= self.sample_loss_ema_d.max_loss(c)
        loss_weight = loss_b / (loss_b + loss_d + 1e-8)

        loss_b_update = self.bias_criterion(logit_b, label)
        loss_d_update = self.criterion(logit_d, label) * loss_weight.to(data.device)
        loss = loss_b_update.mean() + loss_d_update.mean()

        self.optimizer_b.zero_grad()
        self.optimizer_d.zero_grad()
        loss.backward()
        self.optimizer_b.step()
        self.optimizer_d.step()
        return loss.detach()
