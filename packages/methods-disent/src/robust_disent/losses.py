"""The losses LfF and DisEnt share: generalized cross-entropy and the relative-difficulty weight.

GCE (Zhang & Sabuncu 2018) with p_y the softmax probability of the label:
``GCE = (1 - p_y^q) / q``, whose gradient is ``p_y^q * grad CE``: samples the model already
gets right weigh more, so a GCE-trained network locks onto the easy (spurious) attribute.
LfF's and DisEnt's code do not compute that value; they return ``CE * detached(q * p_y^q)``,
whose gradient is ``q * p_y^q * grad CE``, i.e. q (0.7) times GCE's. The papers' λ's were tuned
with it, so it is the default here (``gce_form="reference"``).

The relative difficulty (LfF Eq. 3) of sample x is ``W(x) = L_b / (L_b + L_d)``, with L the
per-sample cross-entropy of the biased (b) and debiased (d; DisEnt's intrinsic) model, each
an exponential moving average over the sample's visits and divided by the largest average of
its class. A large W means the biased model finds x hard: probably bias-conflicting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from robust.api import Options, gather_rows

GCEForm = Literal["reference", "textbook"]


def gce_reference(logits: Tensor, targets: Tensor, q: float = 0.7) -> Tensor:
    """Per-sample ``CE * detached(q * p_y^q)``: LfF's and DisEnt's GCE (gradient q x GCE's)."""
    logits = logits.float()
    p_y = logits.softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    return F.cross_entropy(logits, targets, reduction="none") * (q * p_y.detach() ** q)


def gce_textbook(logits: Tensor, targets: Tensor, q: float = 0.7) -> Tensor:
    """Per-sample ``(1 - p_y^q) / q``, GCE as Zhang & Sabuncu define it."""
    p_y = logits.float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    return (1.0 - p_y**q) / q


GCE_FORMS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "reference": gce_reference,
    "textbook": gce_textbook,
}


class GCEConfig(Options):
    """Options of the ``gce`` loss."""

    q: float = Field(0.7, gt=0, le=1, description="Exponent q (LfF and DisEnt: 0.7).")
    form: GCEForm = Field(
        "reference", description="reference: CE * detached(q * p_y^q) (LfF/DisEnt code); textbook: (1 - p_y^q) / q."
    )


def generalized_cross_entropy(config: GCEConfig | dict | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """The registered ``gce`` loss: ``loss(logits, targets) -> (N,)``."""
    config = GCEConfig.model_validate(config or {})
    form, q = GCE_FORMS[config.form], config.q

    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        return form(logits, targets, q)

    return loss


class SampleLossEMA(nn.Module):
    """Per-sample exponential moving average of a loss over training, indexed by ``batch.index``.

    The first visit copies the loss; later ones blend: ``ema <- α ema + (1 - α) loss`` (the
    reference writes both as ``α ema + (1 - α updated) loss``). Buffers, so that the table is
    checkpointed and lives on the run's device.
    """

    def __init__(self, labels: Tensor, num_classes: int, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.num_classes = num_classes
        self.register_buffer("labels", labels.detach().clone().long(), persistent=False)
        self.register_buffer("loss", torch.zeros(len(labels)))
        self.register_buffer("updated", torch.zeros(len(labels)))

    @torch.no_grad()
    def update(self, loss: Tensor, index: Tensor) -> None:
        # The whole global batch's visits, in a run over several processes: the class maxima that
        # normalise this step's weights then see what a single process would.
        index, loss = gather_rows(index), gather_rows(loss.detach().float())
        self.loss[index] = self.alpha * self.loss[index] + (1 - self.alpha * self.updated[index]) * loss
        self.updated[index] = 1.0

    # class_max and normalized read buffers only (nothing to differentiate): no no_grad to enter every step.

    def class_max(self) -> Tensor:
        """The largest average of each class over ALL its training samples (unvisited ones are 0)."""
        init = torch.zeros(self.num_classes, device=self.loss.device)
        return init.scatter_reduce(0, self.labels, self.loss, reduce="amax", include_self=True)

    def normalized(self, index: Tensor) -> Tensor:
        """``ema[index]`` divided by its class's max (0 where the whole class is still at 0)."""
        peak = self.class_max()[self.labels[index]]
        values = self.loss[index]
        return torch.where(peak > 0, values / peak.clamp_min(torch.finfo(values.dtype).tiny), 0.0)


class RelativeDifficulty(nn.Module):
    """The two loss memories and the weight ``W = ê_b / (ê_b + ê_d + 1e-8)`` (detached)."""

    def __init__(self, labels: Tensor, num_classes: int, alpha: float) -> None:
        super().__init__()
        self.ema_b = SampleLossEMA(labels, num_classes, alpha)
        self.ema_d = SampleLossEMA(labels, num_classes, alpha)

    @torch.no_grad()
    def forward(self, ce_b: Tensor, ce_d: Tensor, index: Tensor) -> Tensor:
        """Record this visit's cross-entropies (biased, debiased) of samples ``index``; return W."""
        self.ema_b.update(ce_b, index)
        self.ema_d.update(ce_d, index)
        loss_b = self.ema_b.normalized(index)
        loss_d = self.ema_d.normalized(index)
        return loss_b / (loss_b + loss_d + 1e-8)
