"""Removing learnt spurious examples after training, the two ways the study tries (both fail to
unlearn the pattern, it reports).

* **Group influence** (``experiments/group_influence.py``): a one-shot parameter edit that
  approximates retraining without the m spurious examples Z (p = m/n of the n training points):

      θ ← θ + 1/((1 − p)·n) · Σ_{z ∈ Z} H⁻¹ ∇θ ℓ(z),

  each ``H⁻¹ v`` estimated by LiSSA: ``h ← v + (1 − damp)·h − H_j h / scale`` for ``depth`` steps,
  ``H_j`` the Hessian of the loss of ONE random training point (a Hessian-vector product by double
  backpropagation), averaged over ``repeats`` runs, then divided by ``scale`` (see the README: the
  reference leaves that division out, ``literal_scale=True``).
* **Incremental retraining** (``experiments/incremental_retraining.py``): the same data without the
  spurious examples, training continued from the trained model for as many epochs again at a
  constant learning rate: an ordinary run (``dataset.drop_planted=true``, ``train.init_from``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def _grad(model: nn.Module, loss: Tensor, params: list[Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def lissa_inverse_hvp(
    model: nn.Module,
    v: list[Tensor],
    point: Callable[[], tuple[Tensor, Tensor]],
    *,
    depth: int,
    repeats: int = 10,
    damp: float = 0.01,
    scale: float = 25.0,
    literal_scale: bool = False,
) -> list[Tensor]:
    """An estimate of ``(H + damp·scale·I)⁻¹ v`` (``H`` the Hessian of the mean training loss), from
    ``point()`` drawing one random training example (x, y) per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(t) for t in v]
    for _ in range(repeats):
        h = [t.clone() for t in v]
        for _ in range(depth):
            x, y = point()
            grads = _grad(model, nn.functional.cross_entropy(model(x), y), params, create_graph=True)
            hv = _grad(model, sum((g * t).sum() for g, t in zip(grads, h, strict=True)), params)
            h = [a + (1 - damp) * b - c / scale for a, b, c in zip(v, h, hv, strict=True)]
            h = [t.detach() for t in h]
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
    damp: float = 0.01,
    scale: float = 25.0,
    literal_scale: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The edited parameters (a state dict) of ``model`` without the training points ``spurious``.

    ``images``/``labels``: the whole training set as the model takes it (normalised, on the model's
    device); the model is put in eval mode (BatchNorm with its running statistics).
    """
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n, m = len(labels), len(spurious)
    if m == 0:
        return {k: v.clone() for k, v in model.state_dict().items()}
    gen = generator or torch.Generator().manual_seed(0)

    def point() -> tuple[Tensor, Tensor]:
        i = int(torch.randint(n, (1,), generator=gen))
        return images[i : i + 1], labels[i : i + 1]

    summed = [torch.zeros_like(p) for p in params]
    for k in spurious.tolist():
        v = _grad(model, nn.functional.cross_entropy(model(images[k : k + 1]), labels[k : k + 1]), params)
        s = lissa_inverse_hvp(
            model, v, point, depth=depth, repeats=repeats, damp=damp, scale=scale, literal_scale=literal_scale
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
