"""The cluster-contrastive loss that pulls a class together across spurious clusters.

For an anchor ``a`` of the batch (the official ``prune/Loss.py``, in the per-anchor InfoNCE form
of Correct-N-Contrast):

* positives ``P(a)``: same class, another cluster: the same object on other spurious features;
* negatives ``N(a)``: the same cluster (any class, the anchor excluded): the same spurious feature;

    L_a = mean_{p ∈ P(a)} [ −s(a, p) + log( Σ_{n ∈ N(a)} e^{s(a, n)} + Σ_{p' ∈ P(a)} e^{s(a, p')} ) ],
    s(u, v) = cos(f_u, f_v) / τ,  τ = 0.07,

averaged over the anchors that have a positive (the reference sums over anchors; see the README).
Minimising it makes the representation — and, through it, the mask — agree within a class
whatever the cluster and disagree within a cluster whatever the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cluster_contrastive_loss(features: Tensor, labels: Tensor, clusters: Tensor, temperature: float = 0.07) -> Tensor:
    """Mean of ``L_a`` over anchors with at least one positive; 0 (with a graph) when none has."""
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / temperature
    n = len(labels)
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    same_class = labels[:, None] == labels[None, :]
    same_cluster = clusters[:, None] == clusters[None, :]
    positive = same_class & ~same_cluster
    negative = same_cluster & ~eye
    anchors = positive.any(dim=1)
    if not bool(anchors.any()):
        return features.sum() * 0.0
    neg_inf = torch.finfo(sim.dtype).min
    # log(Σ_N e^s + Σ_P e^s): one logsumexp over the union of both sets.
    denominator = torch.logsumexp(sim.masked_fill(~(positive | negative), neg_inf), dim=1)
    per_pair = (denominator[:, None] - sim).masked_fill(~positive, 0.0)
    per_anchor = per_pair.sum(dim=1) / positive.sum(dim=1).clamp_min(1)
    return per_anchor[anchors].mean()
