"""Learnable per-weight masks (Csordás et al., ICLR 2021, as DCWP and PruSC parameterise them).

Every weight of every convolution and linear layer (the head included; biases and normalisation
layers are not masked) gets a real logit π of the weight's shape, initialised to 1.5 (sigmoid ≈
0.82: the network starts dense). While pruning, each forward draws a hard binary mask:

    q = sigmoid(π);  g = −log(log(u₁ + ε) / log(u₀ + ε) + ε),  u₀, u₁ ~ U(0, 1);
    soft = sigmoid((π + g) / τ);  m = 1[soft > 0.5] in the forward, ∂m/∂π = ∂soft/∂π backward

(the straight-through Gumbel-sigmoid of Csordás et al.). Afterwards the mask is fixed:
``m = 1[π ≥ 0]``. The released code (DCWP's ``GumbelSigmoid.py``) adds the noise to ``sigmoid(π)``
instead of ``π`` (``mask_sample=dcwp``): its keep probability then stays within 0.5-0.73 whatever
π, so the sampled networks it trains are not the fixed-mask network it keeps (see the README). The masks live beside the
classifier, not in it: the masked forward is ``functional_call(model, {w: w ⊙ m})``, so the
classifier's weights and their names stay those of a plain model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

EPS = 1e-10


def maskable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights to mask: ``weight`` of every ``nn.Conv*d`` and ``nn.Linear``, by parameter name."""
    found = {}
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            found[f"{prefix}.weight" if prefix else "weight"] = module.weight
    return found


def gumbel_sigmoid_mask(
    logits: Tensor, tau: float = 1.0, generator: torch.Generator | None = None, form: str = "logit"
) -> Tensor:
    """A hard 0/1 sample with the straight-through gradient of its soft relaxation.

    ``form="logit"``: ``sigmoid((π + g) / τ)``, so P(keep) = sigmoid(π) and the fixed mask ``π ≥ 0``
    keeps exactly the weights kept more often than not. ``form="dcwp"``: the released code's
    ``sigmoid((sigmoid(π) + g) / τ)``, whose P(keep) stays between 0.5 and 0.73 whatever π.
    """
    u = torch.rand((2, *logits.shape), device=logits.device, generator=generator)
    noise = -torch.log(torch.log(u[1] + EPS) / torch.log(u[0] + EPS) + EPS)
    location = torch.sigmoid(logits) if form == "dcwp" else logits
    soft = torch.sigmoid((location + noise) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly 0 or 1 forward; the soft gradient backward


class WeightMasks(nn.Module):
    """One logit tensor per maskable weight of ``model``, and the masked forward."""

    def __init__(self, model: nn.Module, init: float = 1.5) -> None:
        super().__init__()
        self.names = list(maskable_weights(model))
        # ParameterDict keys cannot hold dots: index the logits by position, keep the names aside.
        self.logits = nn.ParameterList(nn.Parameter(torch.full_like(w, init)) for w in maskable_weights(model).values())

    def fixed(self) -> dict[str, Tensor]:
        """The deterministic mask ``1[π ≥ 0]`` of every masked weight."""
        return {n: (p >= 0).to(p.dtype) for n, p in zip(self.names, self.logits, strict=True)}

    def sampled(self, tau: float, form: str = "logit") -> dict[str, Tensor]:
        return {n: gumbel_sigmoid_mask(p, tau, form=form) for n, p in zip(self.names, self.logits, strict=True)}

    def masked_call(self, model: nn.Module, masks: dict[str, Tensor], fn: Callable[..., Tensor] | None = None):
        """``model`` (or ``fn(model, x)``) with every masked weight replaced by ``w ⊙ m``: a function of x."""
        params = dict(model.named_parameters())
        masked = {n: params[n] * m for n, m in masks.items()}

        def call(x: Tensor):
            if fn is None:
                return functional_call(model, masked, (x,), strict=False)
            return functional_call(_Bound(model, fn), {f"model.{n}": t for n, t in masked.items()}, (x,), strict=False)

        return call

    def sparsity_penalty(self) -> Tensor:
        """``L_sparse = Σ π`` over every mask logit (the reference sums raw logits, not sigmoids)."""
        return torch.stack([p.sum() for p in self.logits]).sum()

    @torch.no_grad()
    def kept_fraction(self) -> float:
        """The fraction of masked weights the fixed mask keeps (``π ≥ 0``): ``report()["total"]``'s kept
        over its weights, 1 − its sparsity."""
        kept = sum(int((p >= 0).sum()) for p in self.logits)
        return kept / max(sum(p.numel() for p in self.logits), 1)

    @torch.no_grad()
    def report(self) -> dict[str, dict[str, float]]:
        """Per masked layer and in total: weights, kept weights (π ≥ 0), sparsity = pruned fraction."""
        rows: dict[str, dict[str, float]] = {}
        kept_all = total_all = 0
        for name, p in zip(self.names, self.logits, strict=True):
            kept, total = int((p >= 0).sum()), p.numel()
            rows[name] = {"weights": total, "kept": kept, "sparsity": 1 - kept / total}
            kept_all += kept
            total_all += total
        rows["total"] = {"weights": total_all, "kept": kept_all, "sparsity": 1 - kept_all / max(total_all, 1)}
        return rows


class _Bound(nn.Module):
    """Lets ``functional_call`` run ``fn(model, x)`` (e.g. features and logits) instead of ``model(x)``."""

    def __init__(self, model: nn.Module, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x: Tensor):
        return self.fn(self.model, x)
