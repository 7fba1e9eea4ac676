"""The training characteristics: the perturbation network's ten inputs per sample.

For a sample with label ``y``, logits ``z``, ``p = softmax(z)``, penultimate features ``h`` and
the classifier's weight row ``W_y`` (``weight_feature`` in the reference, in its order):

 1. ``loss``              CE(z, y)
 2. ``margin``            p_y − max_{k≠y} p_k
 3. ``grad_norm``         ‖1 − p‖₂: the reference's proxy for the logit-gradient norm (the true
                          CE logit gradient is p − onehot(y); we keep the reference's quantity)
 4. ``cosine``            cos(h, W_y)
 5. ``neg_entropy``       Σ_k p_k log p_k (minus the entropy, the reference's sign)
 6. ``class_prior``       n_y / N, the label's frequency in the training set
 7. ``class_loss``        L̄_y, the mean loss of class y over the previous epoch
 8. ``class_weight_norm`` ‖W_y‖₂
 9. ``relative_loss``     loss − L̄_y
10. ``relative_margin``   margin − M̄_y, M̄_y the previous epoch's mean margin of class y

By default they are inputs, not paths for gradients: computed without a graph.
``differentiable=True`` keeps the graph to the logits, the features and the class weights: the
released code's virtual step differentiates its loss through them (``CLP_train.py`` computes the
characteristics of the virtual model without ``detach``; its real step detaches them). The class statistics
(:class:`ClassStatistics`) are accumulated over an epoch and rolled over at its end; in the first
epoch L̄ = 5 and M̄ = 1 for every class, the reference's initial values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust.api import all_reduce_sum

NAMES: tuple[str, ...] = (
    "loss",
    "margin",
    "grad_norm",
    "cosine",
    "neg_entropy",
    "class_prior",
    "class_loss",
    "class_weight_norm",
    "relative_loss",
    "relative_margin",
)
NUM_CHARACTERISTICS = len(NAMES)
LOSS, MARGIN = NAMES.index("loss"), NAMES.index("margin")
INITIAL_CLASS_LOSS = 5.0  # the reference's loss_tensor_last
INITIAL_CLASS_MARGIN = 1.0  # the reference's margin_tensor_last


def characteristics(
    logits: Tensor,
    features: Tensor,
    weight: Tensor,
    labels: Tensor,
    class_prior: Tensor,
    class_loss: Tensor,
    class_margin: Tensor,
    *,
    differentiable: bool = False,
) -> Tensor:
    """``(N, 10)``, columns in the order of :data:`NAMES`, in float32 (float64 for float64 inputs).

    ``weight`` is the classifier's ``(C, D)`` weight; ``class_prior``, ``class_loss`` and
    ``class_margin`` are ``(C,)`` per-class values, looked up at each sample's label. Detached from
    every graph unless ``differentiable`` (then a function of ``logits``, ``features``, ``weight``).
    """
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        return _characteristics(
            logits if differentiable else logits.detach(),
            features if differentiable else features.detach(),
            weight if differentiable else weight.detach(),
            labels,
            class_prior,
            class_loss,
            class_margin,
        )


def _characteristics(
    logits: Tensor,
    features: Tensor,
    weight: Tensor,
    labels: Tensor,
    class_prior: Tensor,
    class_loss: Tensor,
    class_margin: Tensor,
) -> Tensor:
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32 under bf16; float64 kept (the tests)
    logits, features, weight = logits.to(dtype), features.to(dtype), weight.to(dtype)
    y = labels[:, None]
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    loss = -logp.gather(1, y).squeeze(1)
    p_y = p.gather(1, y).squeeze(1)
    p_other = p.scatter(1, y, float("-inf")).amax(dim=1)
    margin = p_y - p_other
    grad_norm = (1.0 - p).norm(dim=1)
    w_y = weight[labels]
    cosine = F.cosine_similarity(features, w_y, dim=1)
    neg_entropy = (p * logp).sum(dim=1)
    prior = class_prior.to(dtype)[labels]
    last_loss = class_loss.to(dtype)[labels]
    weight_norm = w_y.norm(dim=1)
    relative_loss = loss - last_loss
    relative_margin = margin - class_margin.to(dtype)[labels]
    columns = (
        loss,
        margin,
        grad_norm,
        cosine,
        neg_entropy,
        prior,
        last_loss,
        weight_norm,
        relative_loss,
        relative_margin,
    )
    return torch.stack(columns, dim=1)


def class_prior(labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` training-label frequencies ``n_c / N``."""
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).float()
    return counts / counts.sum().clamp_min(1.0)


class ClassStatistics(nn.Module):
    """Per-class mean loss and margin of the previous epoch (L̄, M̄), and this epoch's running sums.

    Buffers, so that they are checkpointed (a resumed run continues the epoch's sums) and move with
    the method. ``prior`` is derived from the data and not saved.
    """

    def __init__(self, prior: Tensor) -> None:
        super().__init__()
        num_classes = prior.shape[0]
        self.register_buffer("prior", prior.float().clone(), persistent=False)
        self.register_buffer("class_loss", torch.full((num_classes,), INITIAL_CLASS_LOSS))
        self.register_buffer("class_margin", torch.full((num_classes,), INITIAL_CLASS_MARGIN))
        self.register_buffer("loss_sum", torch.zeros(num_classes))
        self.register_buffer("margin_sum", torch.zeros(num_classes))
        self.register_buffer("count", torch.zeros(num_classes))

    def characteristics(
        self, logits: Tensor, features: Tensor, weight: Tensor, labels: Tensor, *, differentiable: bool = False
    ) -> Tensor:
        """The ten characteristics with this object's prior and previous-epoch statistics."""
        return characteristics(
            logits,
            features,
            weight,
            labels,
            self.prior,
            self.class_loss,
            self.class_margin,
            differentiable=differentiable,
        )

    @torch.no_grad()
    def accumulate(self, labels: Tensor, loss: Tensor, margin: Tensor) -> None:
        """Add a batch's per-sample losses and margins to this epoch's sums (the whole global batch's,
        in a run over several processes)."""
        sums = torch.zeros(3, self.count.shape[0], device=self.count.device, dtype=self.count.dtype)
        sums[0].index_add_(0, labels, loss.detach().to(sums.dtype))
        sums[1].index_add_(0, labels, margin.detach().to(sums.dtype))
        sums[2].index_add_(0, labels, torch.ones_like(loss, dtype=sums.dtype))
        all_reduce_sum(sums)
        self.loss_sum += sums[0]
        self.margin_sum += sums[1]
        self.count += sums[2]

    @torch.no_grad()
    def roll(self) -> None:
        """End of an epoch: L̄, M̄ become this epoch's means; a class not seen keeps its previous value."""
        seen = self.count > 0
        count = self.count.clamp_min(1.0)
        self.class_loss.copy_(torch.where(seen, self.loss_sum / count, self.class_loss))
        self.class_margin.copy_(torch.where(seen, self.margin_sum / count, self.class_margin))
        self.loss_sum.zero_()
        self.margin_sum.zero_()
        self.count.zero_()
