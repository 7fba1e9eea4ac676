"""A compact port of Levy et al.'s CVaR batch loss without regularisation, as SubpopBench uses it
(YyzHarry/SubpopBench ``subpopbench/learning/joint_dro.py``, from daniellevy/fast-dro
``robust_losses.py``: ``RobustLoss(size, 0, "cvar")``: ``best_response``'s reg = 0 branch, ``forward``,
``cvar_value``)."""

from __future__ import annotations

import numpy as np
import torch


def best_response(v: torch.Tensor, size: float) -> torch.Tensor:
    m = v.shape[0]
    cutoff = int(size * m)
    surplus = 1.0 - cutoff / (size * m)
    p = torch.zeros_like(v)
    idx = torch.argsort(v, descending=True)
    p[idx[:cutoff]] = 1.0 / (size * m)
    if cutoff < m:
        p[idx[cutoff]] = surplus
    return p


def cvar_value(p: torch.Tensor, v: torch.Tensor, reg: float) -> torch.Tensor:
    m = p.shape[0]
    with torch.no_grad():
        idx = torch.nonzero(p)
        kl = np.log(m) + (p[idx] * torch.log(p[idx])).sum()
    return torch.dot(p, v) - reg * kl


def robust_loss(v: torch.Tensor, size: float) -> torch.Tensor:
    if size == 0:
        return v.mean()
    with torch.no_grad():
        p = best_response(v, size)
    return cvar_value(p, v, 0.0)
