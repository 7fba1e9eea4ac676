"""A compact port of the IRM step of aix-group/prusc ``invariant_learning/irm.py`` (HEAD 8264fdc; itself
the original IRMv1 ColoredMNIST script of facebookresearch/InvariantRiskMinimization), to run beside
``robust_prusc.irm_afe.IRMAFE``.

Kept: the loop body's arithmetic, in the original order: each environment forwarded on its own,
its NLL and its penalty ``‖∇_w NLL(w · logits)|_{w=1}‖²``, the mean over the two training
environments, ``Σ‖W‖²`` by ``w.norm().pow(2)``, λ = 1 before ``penalty_anneal_iters`` and
``penalty_weight`` from then on, and the whole loss divided by λ when λ > 1. Left out: the restarts,
printing and the test environment. One change: ``mean_nll`` is the cross-entropy over C classes
(ours) instead of the reference's BCE on one logit; the reference's binary labels are a special
case of the datasets we run, and the penalty's definition does not depend on the loss.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, autograd, nn


def mean_nll(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y)


def penalty(logits: Tensor, y: Tensor) -> Tensor:
    scale = torch.tensor(1.0).requires_grad_()
    loss = mean_nll(logits * scale, y)
    grad = autograd.grad(loss, [scale], create_graph=True)[0]
    return torch.sum(grad**2)


class IRMReference:
    """The reference's model and Adam; :meth:`step` is one iteration of its training loop."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 5e-4,
        l2_regularizer_weight: float = 1e-3,
        penalty_weight: float = 9100.0,
        penalty_anneal_iters: int = 190,
    ) -> None:
        self.mlp = copy.deepcopy(model)
        self.optimizer = torch.optim.Adam(self.mlp.parameters(), lr=lr)
        self.l2_regularizer_weight = l2_regularizer_weight
        self.penalty_weight = penalty_weight
        self.penalty_anneal_iters = penalty_anneal_iters

    def step(self, step: int, envs: list[tuple[Tensor, Tensor]]) -> None:
        results = []
        for images, labels in envs:
            logits = self.mlp(images)
            results.append({"nll": mean_nll(logits, labels), "penalty": penalty(logits, labels)})
        train_nll = torch.stack([env["nll"] for env in results]).mean()
        train_penalty = torch.stack([env["penalty"] for env in results]).mean()
        weight_norm = torch.tensor(0.0)
        for w in self.mlp.parameters():
            weight_norm += w.norm().pow(2)
        loss = train_nll.clone()
        loss += self.l2_regularizer_weight * weight_norm
        penalty_weight = self.penalty_weight if step >= self.penalty_anneal_iters else 1.0
        loss += penalty_weight * train_penalty
        if penalty_weight > 1.0:
            loss /= penalty_weight
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
