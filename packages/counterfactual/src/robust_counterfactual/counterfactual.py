"""Counterfactual training shared by CFGen and CLP: the foreground of a batch, and the losses of a
batch enlarged with factual images (labelled) and counterfactual images, trained away from the
label they no longer show.

``logp``: ``-log(1 - p_k)`` for the removed class k, computed stably from the logits (for two
classes it equals CE towards the other class, the reference's shortcut). ``uni``: CE to the
uniform distribution; ``uni_e``: CE to the uniform distribution over the other classes.

Normalisation as the reference (``counterfact_cri``): when the batch has both kinds, both sums
are divided by the total number of images N (originals + CF + F), not by their own counts; when
it has one kind, that kind's mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import Batch
from robust_counterfactual.infill import boxes_to_mask


def batch_foreground(batch: Batch) -> Tensor | None:
    """The foreground mask ``(N, 1, H, W)`` in {0, 1}: the batch's mask, else its boxes rasterised."""
    if batch.mask is not None:
        return (batch.mask > 0.5).to(batch.x.dtype)
    if batch.bbox is not None:
        return boxes_to_mask(batch.bbox, batch.x.shape[-2], batch.x.shape[-1]).to(batch.x.dtype)
    return None


def _at_least_float32(logits: Tensor) -> Tensor:
    """Half-precision logits in float32 for the loss; float64 stays float64 (exact comparisons in tests)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def counterfactual_loss(logits: Tensor, removed: Tensor, kind: str = "logp") -> Tensor:
    """Per-sample loss of images whose class ``removed`` (N,) has been taken out."""
    logp = F.log_softmax(_at_least_float32(logits), dim=1)
    if kind == "logp":
        others = logp.scatter(1, removed[:, None], float("-inf"))
        return -torch.logsumexp(others, dim=1)  # -log(sum_{j != k} p_j) = -log(1 - p_k)
    if kind == "uni":
        return -logp.mean(dim=1)
    if kind == "uni_e":
        weights = torch.full_like(logp, 1.0 / (logp.shape[1] - 1)).scatter(1, removed[:, None], 0.0)
        return -(weights * logp).sum(dim=1)
    raise ValueError(f"unknown counterfactual loss {kind!r}; expected logp, uni or uni_e")


def counterfactual_batch_losses(
    logits: Tensor,
    labels: Tensor,
    cf_logits: Tensor | None = None,
    removed: Tensor | None = None,
    kind: str = "logp",
) -> tuple[Tensor, Tensor]:
    """``(c, c_cf)``: CE of labelled images and the CF loss, normalised as the reference."""
    ce = F.cross_entropy(_at_least_float32(logits), labels, reduction="sum")
    if cf_logits is None or removed is None or len(removed) == 0:
        return ce / len(labels), logits.new_zeros((), dtype=ce.dtype)
    total = len(labels) + len(removed)
    return ce / total, counterfactual_loss(cf_logits, removed, kind).sum() / total
