"""Removing learnt spurious examples after training, the two ways the study tries (both fail to
unlearn the pattern, it reports).

* **Group influence** (``experiments/group_influence.py``): a one-shot parameter edit that
  approximates retraining without the m spurious examples Z (p = m/n of the n training points):

      θ ← θ + 1/((1 − p)·n) · Σ_{z ∈ Z} H⁻¹ ∇θ ℓ(z),

  each ``H⁻¹ v`` estimated by LiSSA: ``h ← v + (1 − damp)·h − H_j h / scale`` for ``depth`` steps,
  ``H_j`` the Hessian of the loss of ONE random training point (a Hessian-vector product by double
  backpropagation), averaged over ``repeats`` runs, then divided by ``scale`` (see the README: the
  reference leaves that division out, ``literal_scale=True``, and its products also differentiate
  through ``v``, ``literal_hvp=True``).
  Defaults per dataset as the reference picks them: :func:`lissa_defaults`.
* **Incremental retraining** (``experiments/incremental_retraining.py``): the same data without the
  spurious examples, training continued from the trained model AND its optimizer state at a
  constant learning rate: :mod:`robust_rare.retraining`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
DAMP = 0.01


def lissa_defaults(dataset: str, m: int) -> tuple[float, int]:
    """``(scale, depth)`` of LiSSA for ``m`` spurious examples of ``dataset``, as the reference picks
    them (``experiments/group_influence.py``): by substring of the dataset name, ``fashion`` scale
    100, ``cifar10`` scale 100 and depth 1000, anything else (MNIST) scale 25; depth 2000 below 100
    spurious examples, else 1000."""
    if "fashion" in dataset:
        return 100.0, 2000 if m < 100 else 1000
    if "cifar10" in dataset:
        return 100.0, 1000
    return 25.0, 2000 if m < 100 else 1000


def _grad(
    model: nn.Module, loss: Tensor, params: list[Tensor], create_graph: bool = False, retain_graph: bool = False
) -> list[Tensor]:
    grads = torch.autograd.grad(
        loss, params, create_graph=create_graph, retain_graph=retain_graph or create_graph, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def lissa_inverse_hvp(
    model: nn.Module,
    v: list[Tensor],
    point: Callable[[], tuple[Tensor, Tensor]],
    *,
    depth: int,
    repeats: int = 10,
    damp: float = DAMP,
    scale: float = 25.0,
    literal_scale: bool = False,
    v_graph: list[Tensor] | None = None,
) -> list[Tensor]:
    """An estimate of ``(H + damp·scale·I)⁻¹ v`` (``H`` the Hessian of the mean training loss), from
    ``point()`` drawing one random training example (x, y) per step.

    ``v_graph``: ``v`` still attached to the graph that computed it (the removed point's gradient,
    ``create_graph=True``), to reproduce the reference's products. Its ``h`` keeps ``v``'s graph
    (``h_k = c_k·v + …``, ``c_k = 1 + (1 − damp)·c_{k−1}``, ``c_0 = 0``), so each product after the
    first is ``H_j h + c_k·H_z ∇ℓ_j``, ``H_z`` the Hessian of the removed point's loss: a term LiSSA
    does not have, computed here in one pass instead of through a graph that grows with ``depth``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(t) for t in v]
    for _ in range(repeats):
        h = [t.clone() for t in v]
        carried = 0.0  # c_k: how much of v (a function of θ) the reference's h holds
        for _ in range(depth):
            x, y = point()
            grads = _grad(model, nn.functional.cross_entropy(model(x), y), params, create_graph=True)
            product = sum((g * t).sum() for g, t in zip(grads, h, strict=True))
            if v_graph is not None and carried:
                product = product + carried * sum((g.detach() * t).sum() for g, t in zip(grads, v_graph, strict=True))
            hv = _grad(model, product, params, retain_graph=v_graph is not None)
            h = [(a + (1 - damp) * b - c / scale).detach() for a, b, c in zip(v, h, hv, strict=True)]
            carried = 1 + (1 - damp) * carried
        total = [a + b for a, b in zip(total, h, strict=True)]
    divisor = repeats * (1.0 if literal_scale else scale)
    return [t / divisor for t in total]


def group_influence_edit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spurious: Tensor,
    *,
    depth: int = 1000,
    repeats: int = 10,
    damp: float = DAMP,
    scale: float = 25.0,
    literal_scale: bool = False,
    literal_hvp: bool = False,
    generator: torch.Generator | None = None,
    draws: Iterator[int] | None = None,
) -> dict[str, Tensor]:
    """The edited parameters (a state dict) of ``model`` without the training points ``spurious``
    (processed in the order given, each with ``repeats × depth`` LiSSA steps).

    ``images``/``labels``: the whole training set as the model takes it (normalised, on the model's
    device); the model is put in eval mode (BatchNorm with its running statistics). Each LiSSA step
    draws one training point uniformly with ``generator``, or takes the next index of ``draws`` (to
    replay another implementation's draws). ``literal_scale`` and ``literal_hvp``: the reference's
    two departures from LiSSA (see :func:`lissa_inverse_hvp`).
    """
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n, m = len(labels), len(spurious)
    if m == 0:
        return {k: v.clone() for k, v in model.state_dict().items()}
    gen = generator or torch.Generator().manual_seed(0)

    def point() -> tuple[Tensor, Tensor]:
        i = int(torch.randint(n, (1,), generator=gen)) if draws is None else next(draws)
        return images[i : i + 1], labels[i : i + 1]

    summed = [torch.zeros_like(p) for p in params]
    for k in spurious.tolist():
        loss = nn.functional.cross_entropy(model(images[k : k + 1]), labels[k : k + 1])
        v_graph = _grad(model, loss, params, create_graph=literal_hvp)
        s = lissa_inverse_hvp(
            model,
            [t.detach() for t in v_graph],
            point,
            depth=depth,
            repeats=repeats,
            damp=damp,
            scale=scale,
            literal_scale=literal_scale,
            v_graph=v_graph if literal_hvp else None,
        )
        summed = [a + b for a, b in zip(summed, s, strict=True)]
    step = 1.0 / ((1 - m / n) * n)
    with torch.no_grad():
        edited = {id(p): p + step * s for p, s in zip(params, summed, strict=True)}
        return {name: edited.get(id(t), t).clone() for name, t in _named_state(model)}


def _named_state(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Parameters (by identity, to be edited) and buffers, under their state-dict names."""
    params = dict(model.named_parameters())
    return [(name, params.get(name, tensor)) for name, tensor in model.state_dict().items()]
