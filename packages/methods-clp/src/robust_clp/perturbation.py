"""The perturbation network: training characteristics in, a logit perturbation out.

The reference's ``MLP`` (``model.py``): the ten characteristics are batch-normalised
(``BatchNorm1d``, so they are standardised per batch), go through ``num_layers`` hidden layers of
``hidden_size`` units with ReLU (Linear 10→100, Linear 100→100), and a tanh-bounded output:

* ``vector`` (default): a ``C``-dimensional perturbation ``δ ∈ (−1, 1)^C`` per sample, the
  paper's framework figure; the classifier trains on ``z + δ``.
* ``label_only``: one scalar ``s ∈ (−1, 1)`` per sample added to the label's logit only,
  ``δ = s · onehot(y)`` (the reference's commented-out ``lp = labels_one_hot * lp``): a learned,
  per-sample logit adjustment.

The released code adds the scalar to EVERY logit (``z + s · 1``). Softmax is invariant to that, so
the cross-entropy, its gradient and hence the meta-gradient do not depend on the network: as
released, the perturbation does nothing. That variant is deliberately not offered.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_clp.characteristics import NUM_CHARACTERISTICS

PerturbMode = Literal["vector", "label_only"]


class PerturbationNet(nn.Module):
    """``P_φ(c) -> δ``: ``(N, 10)`` characteristics to an ``(N, C)`` logit perturbation."""

    def __init__(
        self,
        num_classes: int,
        mode: PerturbMode = "vector",
        *,
        hidden_size: int = 100,
        num_layers: int = 2,
        in_features: int = NUM_CHARACTERISTICS,
    ) -> None:
        super().__init__()
        if mode not in ("vector", "label_only"):
            raise ValueError(f"perturb_mode must be 'vector' or 'label_only', got {mode!r}")
        self.num_classes = num_classes
        self.mode = mode
        self.norm = nn.BatchNorm1d(in_features)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden_size), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_size, hidden_size), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(hidden_size, num_classes if mode == "vector" else 1)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        out = torch.tanh(self.output(self.hidden(self.norm(features))))
        if self.mode == "label_only":
            return out * F.one_hot(labels, self.num_classes).to(out.dtype)
        return out
