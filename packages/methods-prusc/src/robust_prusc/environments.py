"""Training environments from clusters, for invariant learning without annotated environments.

An ERM model's representation clusters by the spurious feature, so within a cluster most samples
share one label (the one the spurious feature predicts) and the others contradict it. The two
environments of the paper (the reference's ``--minority_env`` and ``--balance_env`` files, whose
construction is not released; our reading, see the README):

* minority: every sample whose label is not its cluster's majority label (a *conflicting* sample),
  with as many randomly drawn *aligned* samples: the spurious feature predicts nothing there;
* balanced: every cluster drawn equally often: the spurious correlation of the training set,
  flattened but not removed.

The spurious feature predicts the label differently in the two, the invariant feature equally
well: what IRM needs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def conflicting(labels: Tensor, clusters: Tensor) -> Tensor:
    """True where a sample's label is not the most frequent label of its cluster."""
    k, c = int(clusters.max()) + 1, int(labels.max()) + 1
    counts = torch.zeros(k, c, dtype=torch.long, device=labels.device)
    counts.index_put_((clusters, labels), torch.ones_like(labels), accumulate=True)
    return counts.argmax(dim=1)[clusters] != labels


def minority_environment(labels: Tensor, clusters: Tensor, generator: torch.Generator) -> Tensor:
    """Indices: every conflicting sample and as many aligned ones (fewer if there are not enough)."""
    conflict = conflicting(labels, clusters).cpu()
    minority = conflict.nonzero().flatten()
    aligned = (~conflict).nonzero().flatten()
    chosen = aligned[torch.randperm(len(aligned), generator=generator)[: len(minority)]]
    return torch.cat([minority, chosen])


def balanced_weights(clusters: Tensor) -> Tensor:
    """Sampling weights that draw every cluster equally often."""
    clusters = clusters.cpu()
    return 1.0 / torch.bincount(clusters).double()[clusters]
