"""Input-gradient saliency penalty: penalise the model's input gradient outside the object.

Differentiable (double backprop): the gradient is taken with ``create_graph=True`` so that the
penalty trains the model. Two methods use it, with different choices:

* CFGen (Chang et al., CVPR 2021; zzzace2000/robust_cls_model, ``--reg bbox_o --reg_grad grad_y``):
  the gradient of the label logit, penalised as the mean over ALL elements ``(N, C, H, W)`` of the
  squared gradient outside the mask (``reduction="mean_all"``).
* CLP (Zhou et al., Information Sciences; xiaolingzhou98/CLP): the gradient of the cross-entropy,
  penalised per image as the squared gradient (summed over channels) averaged over the background
  pixels, then averaged over images (``reduction="per_background_pixel"``). The released code
  cannot produce a gradient (see the notes' section 8.1, item 3); this is the intended version.

Typical use::

    logits, grad = input_gradient(model, x[has_fg], y[has_fg])
    penalty = outside_mask_penalty(grad, mask[has_fg])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GradientTarget = Literal["label_logit", "ce"]
PenaltyReduction = Literal["mean_all", "per_background_pixel"]


def input_gradient(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    target: GradientTarget = "label_logit",
    literal_batch_index: bool = False,
    *,
    create_graph: bool = True,
) -> tuple[Tensor, Tensor]:
    """The logits of ``x`` and the gradient of a scalar target with respect to ``x``.

    ``x`` is detached, cloned and made to require grad; ``logits = logits_fn(x)``. The scalar is:

    * ``target="label_logit"`` (CFGen's ``grad_y``, the INTENDED per-sample version):
      ``sum_i logits[i, y_i]``, so that the gradient for image ``i`` is ``d z_i[y_i] / d x_i``.
    * ``target="label_logit", literal_batch_index=True``: ``logits[:, y].sum()``, what the reference
      computes. Indexing with the label vector selects, for EVERY image, the logits of ALL labels in
      the batch (a B x B block), so the gradient for image ``i`` is ``sum_c n_c d z_i[c] / d x_i`` with
      ``n_c`` the number of batch items labelled ``c``. It equals the per-sample version only when all
      labels in the batch are the same (up to the factor B).
    * ``target="ce"`` (CLP): ``sum_i CE(logits_i, y_i)``.

    With a model whose forward couples samples (BatchNorm in train mode), each image's gradient also
    carries the other images' terms, as in both references.

    ``create_graph=True`` (the default) keeps the graph of the gradient so that a penalty on it can be
    back-propagated into the model (double backprop). Returns ``(logits, grad)``; the logits keep
    their graph, so the caller can reuse them for the classification loss.
    """
    if target not in ("label_logit", "ce"):
        raise ValueError(f"target must be 'label_logit' or 'ce', got {target!r}")
    if literal_batch_index and target != "label_logit":
        raise ValueError("literal_batch_index applies to target='label_logit' only")
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_fn(x_req)
        if target == "ce":
            scalar = F.cross_entropy(logits, y, reduction="sum")
        elif literal_batch_index:
            scalar = logits[:, y].sum()
        else:
            scalar = logits.gather(1, y.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(scalar, x_req, create_graph=create_graph)
    return logits, grad


def outside_mask_penalty(grad: Tensor, mask: Tensor, reduction: PenaltyReduction = "mean_all") -> Tensor:
    """The squared input gradient outside the foreground ``mask`` (``(N, 1, H, W)``, 1 = foreground).

    * ``"mean_all"`` (CFGen's ``bbox_o``): ``mean over (N, C, H, W) of (grad * (1 - mask))^2``. Every
      element counts in the average, those inside the mask as zeros: the scale depends on the image
      size and on the foreground's area (tune the coefficient with that in mind).
    * ``"per_background_pixel"`` (CLP, its intended fixed version):
      ``mean_i [sum_hw (1 - m_i) * sum_c grad_ic^2] / max(sum_hw (1 - m_i), 1)``, the mean squared
      gradient norm per background pixel, averaged over images.

    Pass only the images that have a foreground (both references do): an image without one would
    be penalised everywhere. An empty batch gives 0 (still connected to ``grad``'s graph).
    """
    if grad.ndim != 4 or mask.ndim != 4 or mask.shape[0] != grad.shape[0] or mask.shape[2:] != grad.shape[2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the gradient {tuple(grad.shape)}")
    if grad.shape[0] == 0:
        return grad.sum() * 0.0
    background = 1.0 - mask.to(grad.dtype)
    if reduction == "mean_all":
        return (grad * background).pow(2).mean()
    if reduction == "per_background_pixel":
        energy = grad.pow(2).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        per_image = (energy * background).flatten(1).sum(1) / background.flatten(1).sum(1).clamp_min(1.0)
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean_all' or 'per_background_pixel', got {reduction!r}")
