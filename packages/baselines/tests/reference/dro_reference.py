"""A compact port of Levy et al.'s CVaR (and χ²) batch loss without regularisation, as SubpopBench uses it
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


# -- χ² (daniellevy/fast-dro robust_losses.py: ``RobustLoss(size, 0, "chi-square")``, ``bisection``) --


def bisection(eta_min, eta_max, f, tol=1e-4, max_iter=1000):
    lower, upper = f(eta_min), f(eta_max)
    while lower > 0 or upper < 0:
        length = eta_max - eta_min
        if lower > 0:
            eta_max = eta_min
            eta_min = eta_min - 2 * length
        if upper < 0:
            eta_min = eta_max
            eta_max = eta_max + 2 * length
        lower, upper = f(eta_min), f(eta_max)
    for _ in range(max_iter):
        eta = 0.5 * (eta_min + eta_max)
        v = f(eta)
        if torch.abs(v) <= tol:
            return eta
        if v > 0:
            eta_max = eta
        elif v < 0:
            eta_min = eta
    return 0.5 * (eta_min + eta_max)


def chi_square_best_response(v: torch.Tensor, size: float, tol=1e-4, max_iter=1000) -> torch.Tensor:
    m = v.shape[0]
    if (v.max() - v.min()) / v.max() <= 1e-5:
        return torch.ones_like(v) / m
    if m <= 1 + 2 * size:
        out = (v == v.max()).float()
        out /= out.sum()
        return out

    def p(eta):
        pp = torch.relu(v - eta)
        return pp / pp.sum()

    def bisection_target(eta):
        pp = p(eta)
        w = m * pp - torch.ones_like(pp)
        return 0.5 * torch.mean(w**2) - size

    eta_min = -(1.0 / (np.sqrt(2 * size + 1) - 1)) * v.max()
    eta_max = v.max()
    return p(bisection(eta_min, eta_max, bisection_target, tol, max_iter))


def chi_square_loss(v: torch.Tensor, size: float) -> torch.Tensor:
    if size == 0:
        return v.mean()
    with torch.no_grad():
        p = chi_square_best_response(v, size)
    m = p.shape[0]
    with torch.no_grad():
        chi2 = (0.5 / m) * 0.0 * (torch.norm(m * p - torch.ones(m, dtype=p.dtype), p=2) ** 2)
    return torch.dot(p, v) - chi2
