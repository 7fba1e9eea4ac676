"""χ²-DRO: minimise the worst expected loss over reweightings p of the batch within a χ² ball,
½·mean((m·p − 1)²) ≤ ρ around the uniform weights.

Levy et al.'s batch estimator without regularisation (daniellevy/fast-dro ``robust_losses.py``,
``RobustLoss(size=ρ, reg=0, geometry="chi-square")``): the best response is p(η) ∝ relu(ℓ − η),
with η found by bisection so that the χ² constraint is tight (tolerance ``tol`` on the constraint,
at most ``max_iter`` halvings, the released defaults 1e-4 and 1000); the loss is Σ p_i ℓ_i with ``p``
held fixed (no gradient through η). Two shortcuts of the released code are kept: nearly equal losses
(relative spread ≤ 1e-5) give uniform weights, and a batch of m ≤ 1 + 2ρ puts all the mass on its
largest loss(es), where the ball contains that vertex. No group labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from robust.api import ERM, Batch
from robust_baselines.config import Chi2DROConfig
from robust_baselines.presets import CVAR_DATASET_PRESETS, CVAR_PRESETS

#: fast-dro's MIN_REL_DIFFERENCE: below this relative spread the losses count as equal.
MIN_REL_DIFFERENCE = 1e-5
#: Widenings of the bracket before giving up (each triples it; 64 stay finite in float32). Unbounded
#: in the released code; the start bracket holds the root for every batch, so this only stops a broken f.
MAX_WIDENINGS = 64


def bisect(lo: Tensor, hi: Tensor, f: Callable[[Tensor], Tensor], tol: float, max_iter: int) -> Tensor:
    """A root of the increasing ``f``: the bracket widened (moved out by twice its width) until it holds a sign change,
    then halved until ``|f| <= tol`` (fast-dro's ``bisection``, the same arithmetic)."""
    f_lo, f_hi = f(lo), f(hi)
    for _ in range(MAX_WIDENINGS):
        if not (f_lo > 0 or f_hi < 0):
            break
        width = hi - lo
        if f_lo > 0:
            lo, hi = lo - 2 * width, lo
        if f_hi < 0:
            lo, hi = hi, hi + 2 * width
        f_lo, f_hi = f(lo), f(hi)
    else:  # the released loop has no bound: it would spin forever on an f without a sign change
        raise RuntimeError(f"χ²-DRO: no sign change of the χ² constraint in {MAX_WIDENINGS} widenings.")
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        value = f(mid)
        if torch.abs(value) <= tol:
            return mid
        if value > 0:
            hi = mid
        elif value < 0:
            lo = mid
    # 4: past bisect, chi2_weights and the frame torch.no_grad's wrapper adds, to chi2_weights' caller
    warnings.warn("χ²-DRO: the bisection for η did not converge within max_iter halvings.", stacklevel=4)
    return 0.5 * (lo + hi)


@torch.no_grad()
def chi2_weights(losses: Tensor, rho: float, tol: float = 1e-4, max_iter: int = 1000) -> Tensor:
    """The best response of the χ² ball of radius ρ to the batch's losses."""
    m = losses.shape[0]
    top = losses.max()
    # All losses 0 (a confident float32 batch): the released code's spread test is 0/0 and its bisection
    # returns relu(0)/0, NaN weights and a NaN step. Repair: equal losses, so uniform, as its own rule.
    if top <= 0 or (top - losses.min()) / top <= MIN_REL_DIFFERENCE:
        return torch.ones_like(losses) / m
    if m <= 1 + 2 * rho:  # the ball holds the vertex: all the mass on the largest loss(es)
        out = (losses == top).to(losses.dtype)
        return out / out.sum()

    def p(eta: Tensor) -> Tensor:
        w = torch.relu(losses - eta)
        return w / w.sum()

    def divergence_minus_rho(eta: Tensor) -> Tensor:
        return 0.5 * torch.mean((m * p(eta) - 1) ** 2) - rho

    lo = -(1.0 / (np.sqrt(2 * rho + 1) - 1)) * top
    return p(bisect(lo, top, divergence_minus_rho, tol, max_iter))


def chi2_loss(losses: Tensor, rho: float, tol: float = 1e-4, max_iter: int = 1000) -> Tensor:
    """The worst reweighted mean of the per-sample losses over the χ² ball (ρ = 0: their mean)."""
    if rho == 0:
        return losses.mean()
    return torch.dot(chi2_weights(losses, rho, tol, max_iter), losses)


class Chi2DRO(ERM):
    """One classifier trained on the χ²-robust loss of each batch."""

    Config = Chi2DROConfig
    config: Chi2DROConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = CVAR_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = CVAR_DATASET_PRESETS

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        losses = self.loss(self.model(batch.x), batch.y).float()
        c = self.config
        loss = chi2_loss(losses, c.rho, c.bisection_tol, c.bisection_max_iter)
        self.optimize(loss, clip_grad_norm=c.clip_grad_norm)
        return {"loss": loss.detach(), "mean_loss": losses.detach().mean()}
