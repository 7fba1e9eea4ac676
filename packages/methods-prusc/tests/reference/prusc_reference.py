"""A compact port of PruSC's released pruning and retraining steps, to run beside ``robust_prusc.prusc.PruSC``.

Ported from aix-group/prusc (HEAD 8264fdc): ``training/pruning.py`` (``PruneSolver.train_PRUNE``'s
loop body, ``sparsity_regularizer``, ``retrain``'s loop body, the ``optims_main``/``optims_mask``
optimisers and ``scheduler_main``), ``prune/GumbelSigmoid.py`` (``GumbelSigmoidMask``),
``prune/GateLayer.py`` (``GateMLP``/``GateConv2d.forward``) and ``prune/Loss.py``
(``SupervisedContrastiveLoss``: per anchor, the mean over its positives of
``-log(e^{s(a,p)} / (Σ_N e^{s(a,n)} + Σ_P e^{s(a,p')}))``, ``s`` = cosine / 0.07). Kept: the
arithmetic, in the original order. Left out: logging, validation, checkpoints. Adam's betas of the
retraining are DCWP's ``main.py`` defaults (0.9, 0.99): PruSC's ``run.py`` names ``beta1``/``beta2``
without defining them.

Changes, each a switch so that a test can pick the released behaviour or our documented repair:

* the gated layers replace ``nn.Linear``/``nn.Conv2d`` of any classifier (:func:`gate`) instead of
  the hand-written ``GateResNet``; ``classifier(x, feature=True)`` is ``features`` then ``head``;
* ``sigmoid_first=True`` is the released sample ``sigmoid((sigmoid(π) + g)/τ)``; False adds the
  noise to ``π`` (our ``mask_sample=logit``);
* the contrastive term. Released (``contrastive_grad=False``): accumulated with ``.item()``, a
  Python float, so whatever its value it adds nothing to the update; the port therefore adds
  the (detached) value of the intended term. Repaired (``contrastive_grad=True``, our default):
  the same loop with the gradient kept. In both, the sets are the intended ones (positives: same
  class, another cluster; negatives: same cluster, the anchor excluded; the released slicing
  mixes them up), the similarities are those of the features of the step's own forward (the
  released loop re-embeds every contrastive batch with fresh mask samples), and anchors without a
  positive are skipped. ``anchor_reduction``: ``sum`` (released) or ``mean`` (ours).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GumbelSigmoidMask(nn.Module):
    """prune/GumbelSigmoid.py."""

    def __init__(self, mask_shape: torch.Size, sigmoid_first: bool = True) -> None:
        super().__init__()
        self.gumbel_pi = nn.Parameter(1.5 * torch.ones(mask_shape))
        self.sigmoid_first = sigmoid_first

    def sample(self, tau: float = 1.0, eps: float = 1e-10, hard: bool = False) -> Tensor:
        logits = torch.sigmoid(self.gumbel_pi) if self.sigmoid_first else self.gumbel_pi
        uniform = logits.new_empty([2, *logits.shape]).uniform_(0, 1)
        noise = -((uniform[1] + eps).log() / (uniform[0] + eps).log() + eps).log()
        res = torch.sigmoid((logits + noise) / tau)
        if hard:
            res = ((res > 0.5).type_as(res) - res).detach() + res
        return res

    def fix_mask_after_pruning(self) -> Tensor:
        fixed_mask = torch.zeros_like(self.gumbel_pi)
        fixed_mask[self.gumbel_pi >= 0] = 1.0
        return fixed_mask


class Gate(nn.Module):
    """prune/GateLayer.py: the layer's weight times a sampled (pruning) or fixed (freeze) mask."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, sigmoid_first: bool) -> None:
        super().__init__()
        self.layer = layer
        self.mask = GumbelSigmoidMask(layer.weight.shape, sigmoid_first)
        self.pruning = False
        self.freeze = False

    def forward(self, input: Tensor) -> Tensor:
        mask = None
        if self.pruning:
            mask = self.mask.sample(hard=True)
        if self.freeze:
            mask = self.mask.fix_mask_after_pruning()
        weight = self.layer.weight if mask is None else self.layer.weight * mask
        if isinstance(self.layer, nn.Linear):
            return F.linear(input, weight, self.layer.bias)
        return self.layer._conv_forward(input, weight, self.layer.bias)


def gate(classifier: nn.Module, sigmoid_first: bool) -> nn.Module:
    """A copy of ``classifier`` with every ``nn.Linear``/``nn.Conv2d`` gated (in module order)."""
    net = copy.deepcopy(classifier).requires_grad_(True)
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                setattr(module, child_name, Gate(child, sigmoid_first))
    return net


def gates(net: nn.Module) -> list[Gate]:
    return [m for m in net.modules() if isinstance(m, Gate)]


def switch(net: nn.Module, pruning: bool, freeze: bool) -> None:
    """GateResNet's ``pruning_switch`` / ``freeze_switch``."""
    for g in gates(net):
        g.pruning, g.freeze = pruning, freeze


def contrastive_loss(
    feature: Tensor, label: Tensor, cluster: Tensor, temperature: float, anchor_reduction: str
) -> Tensor:
    """The per-anchor loop of ``train_PRUNE`` with ``SupervisedContrastiveLoss`` on the intended sets."""
    total = feature.new_zeros(())
    anchors = 0
    for i in range(len(label)):
        neg_idx = ((cluster == cluster[i]) & (torch.arange(len(label)) != i)).nonzero().flatten()
        pos_idx = ((cluster != cluster[i]) & (label == label[i])).nonzero().flatten()
        if len(pos_idx) == 0:
            continue
        exp_neg = torch.exp(F.cosine_similarity(feature[i].view(1, -1), feature[neg_idx], dim=1) / temperature)
        exp_pos = torch.exp(F.cosine_similarity(feature[i].view(1, -1), feature[pos_idx], dim=1) / temperature)
        sum_exp_neg = exp_neg.sum(0, keepdim=True)
        log_probs = torch.log(exp_pos) - torch.log(sum_exp_neg + exp_pos.sum(0, keepdim=True))
        total = total + (-1 * log_probs).mean()
        anchors += 1
    if anchor_reduction == "mean" and anchors:
        total = total / anchors
    return total


class PruSCReference:
    """The released ``PruneSolver`` around one classifier: ``prune_step`` and ``retrain_step``."""

    def __init__(
        self,
        classifier: nn.Module,
        *,
        lr_prune: float = 1e-2,
        lambda_sparse: float = 1e-8,
        lambda_con_prune: float = 0.1,
        temperature: float = 0.07,
        sigmoid_first: bool = True,
        contrastive_grad: bool = False,
        anchor_reduction: str = "sum",
        lr_main: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.99),
        lr_decay_step_main: int = 60,
        lr_gamma_main: float = 0.1,
    ) -> None:
        self.net = gate(classifier, sigmoid_first)
        self.lambda_sparse, self.lambda_con_prune, self.temperature = lambda_sparse, lambda_con_prune, temperature
        self.contrastive_grad, self.anchor_reduction = contrastive_grad, anchor_reduction
        prune_param = [p for n, p in self.net.named_parameters() if "gumbel_pi" in n]
        main_param = [p for n, p in self.net.named_parameters() if "gumbel_pi" not in n]
        self.optim_mask = torch.optim.Adam(prune_param, lr=lr_prune)
        self.optim_main = torch.optim.Adam(main_param, lr=lr_main, betas=betas, weight_decay=0)
        self.scheduler_main = torch.optim.lr_scheduler.StepLR(
            self.optim_main, step_size=lr_decay_step_main, gamma=lr_gamma_main
        )
        self.criterion = nn.CrossEntropyLoss(reduction="none")

    def classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``classifier(x, feature=True)``: logits and the flattened pooled feature."""
        feature = self.net.features(x)
        return self.net.head(feature), feature

    def sparsity_regularizer(self) -> Tensor:
        reg = 0.0
        for n, p in self.net.named_parameters():
            if "gumbel_pi" in n:
                reg = reg + p.sum()
        return reg

    def prune_step(self, x: Tensor, label: Tensor, cluster: Tensor) -> None:
        switch(self.net, pruning=True, freeze=False)
        pred, feature = self.classify(x)
        loss_main = self.criterion(pred, label).mean()
        loss_reg = self.sparsity_regularizer()
        loss_con_batch = contrastive_loss(feature, label, cluster, self.temperature, self.anchor_reduction)
        if not self.contrastive_grad:
            loss_con_batch = loss_con_batch.item()  # as released: no gradient reaches the masks
        loss = loss_main + self.lambda_sparse * loss_reg + loss_con_batch * self.lambda_con_prune
        self.optim_mask.zero_grad()
        self.optim_main.zero_grad()
        loss.backward()
        self.optim_mask.step()

    def retrain_step(self, x: Tensor, label: Tensor) -> None:
        switch(self.net, pruning=False, freeze=True)
        pred, _ = self.classify(x)
        loss_main = self.criterion(pred, label).mean()
        self.optim_mask.zero_grad()
        self.optim_main.zero_grad()
        loss_main.backward()
        self.optim_main.step()
        self.scheduler_main.step()

    def mask_logits(self) -> list[Tensor]:
        return [g.mask.gumbel_pi.detach() for g in gates(self.net)]

    def fixed_masks(self) -> list[Tensor]:
        return [g.mask.fix_mask_after_pruning() for g in gates(self.net)]

    def effective_weights(self) -> list[Tensor]:
        """The weights the retrained network computes with: ``W ⊙ 1[π ≥ 0]``."""
        return [g.layer.weight.detach() * g.mask.fix_mask_after_pruning() for g in gates(self.net)]

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Evaluation as ``train_PRUNE`` validates: the fixed mask (freeze), eval mode."""
        switch(self.net, pruning=False, freeze=True)
        was_training = self.net.training
        self.net.eval()
        out = self.classify(x)[0]
        self.net.train(was_training)
        return out
