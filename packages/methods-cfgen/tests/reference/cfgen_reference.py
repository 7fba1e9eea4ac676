"""A compact port of CFGen's released training step, to run beside ``robust_cfgen.cfgen.CFGen``.

Ported from zzzace2000/robust_cls_model (HEAD c2b9a79 "Fix the bug"):
``arch/lightning/base.py`` (``BaseLightningModel.training_step``, ``counterfact_cri``,
``counterfactual_ce_loss``), ``arch/saliency_utils.py`` (``get_grad_y``), ``arch/utils.py``
(``make_masks_as_rectangular``, ``generate_mask``), ``arch/inpainting/Baseline.py`` (the mean,
shuffle and random-colour inpainters) and ``train_pl.py`` (Lightning's ``gradient_clip_val=1.0``:
the gradient norm clipped before the optimiser step). Only the arithmetic is kept: the NaN
checks, logging, mixup / label smoothing / GridMask / ``channels`` / ``gs`` / ``bbox_f1`` branches
and the Lightning plumbing are left out. Randomness is torch's global generator, as in the
original.

``intended_grad_y=True`` replaces ``logits[:, y].sum()`` by the per-image label logit, the one
place where our default deliberately differs (``literal_batch_index=false``, README decision 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Inpainter = Callable[..., Tensor]


def mean_inpaint(x: Tensor, mask: Tensor, y: Tensor | None = None) -> Tensor:
    """base.py ``get_inpainting_model('mean')``: ``x * mask`` (0 = the mean colour)."""
    return x * mask


def shuffle_inpaint(x: Tensor, mask: Tensor, y: Tensor | None = None) -> Tensor:
    """Baseline.py ``ShuffleInpainter``: every value of the batch permuted, across images and channels."""
    idx = torch.randperm(x.nelement()).to(x.device)
    background = x.reshape(-1)[idx].reshape(x.size())
    return x * mask + background * (1.0 - mask)


def random_inpaint(x: Tensor, mask: Tensor, y: Tensor | None = None) -> Tensor:
    """Baseline.py ``RandomColorWithNoiseInpainter((0.5,) * 3, (0.5,) * 3)``: a colour plus N(0, 0.2) noise."""
    img = x.new(x.size(0), x.size(1), 1, 1).uniform_().repeat(1, 1, x.size(2), x.size(3))
    img += x.new(*x.size()).normal_(0, 0.2)
    img.clamp_(0.0, 1.0)
    img = (img - 0.5) / 0.5
    return x * mask + img * (1.0 - mask)


INPAINTERS: dict[str, Inpainter] = {"mean": mean_inpaint, "shuffle": shuffle_inpaint, "random": random_inpaint}


def make_masks_as_rectangular(masks: Tensor) -> Tensor:
    """utils.py: each mask's pixels == 1 replaced by their bounding rectangle (an empty mask stays empty)."""
    masks = masks.clone()
    for i, mask in enumerate(masks):
        is_mask = (mask == 1).all(dim=0)
        rows = torch.arange(is_mask.shape[0])[is_mask.any(dim=1)]
        if len(rows) == 0:
            continue
        cols = torch.arange(is_mask.shape[1])[is_mask.any(dim=0)]
        masks[i, :, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1
    return masks


def get_grad_y(x: Tensor, y: Tensor, model: nn.Module, intended: bool = False) -> tuple[Tensor, Tensor]:
    """saliency_utils.py ``_get_grad_base`` with ``get_grad_y``'s target, kept for double backprop."""
    with torch.enable_grad():
        x.requires_grad_(True)
        logits = model(x)
        target = logits.gather(1, y[:, None]).sum() if intended else logits[:, y].sum()
        grad = torch.autograd.grad(target, x, retain_graph=True, create_graph=True)[0]
        x.requires_grad_(False)
    return grad, logits


def counterfactual_ce_loss(logit: Tensor, y: Tensor, cf: str, reduction: str) -> Tensor:
    """base.py: the loss of CF images labelled ``-k - 1`` (k the class that was removed)."""
    cf_y = -(y + 1)
    if cf == "uni":
        loss = -F.log_softmax(logit, dim=1).mean(dim=1)
    elif cf == "uni_e":
        logp = F.log_softmax(logit, dim=1)
        weights = torch.ones_like(logp).mul_(1.0 / (logp.shape[1] - 1))
        weights[torch.arange(len(cf_y)), cf_y] = 0.0
        loss = -(weights * logp).sum(dim=1)
    elif cf == "logp":
        if logit.shape[1] == 2:
            return F.cross_entropy(logit, 1 - cf_y, reduction=reduction)
        m, _ = torch.max(logit, dim=1, keepdim=True)
        exp_logit = torch.exp(logit - m)
        sum_exp_logit = torch.sum(exp_logit, dim=1)
        num = torch.log(sum_exp_logit - exp_logit[torch.arange(exp_logit.shape[0]), cf_y] + 1e-20)
        loss = -(num - torch.log(sum_exp_logit + 1e-20))
    else:
        raise NotImplementedError(cf)
    return loss.mean() if reduction == "mean" else loss.sum()


def counterfact_cri(logit: Tensor, y: Tensor, cf: str) -> tuple[Tensor, Tensor]:
    """base.py: (CE, CF loss); with both kinds present each SUM is divided by the whole batch size."""
    zero = logit.new_tensor(0.0)
    if torch.all(y >= 0):
        return F.cross_entropy(logit, y, reduction="mean"), zero
    if torch.all(y < 0):
        return zero, counterfactual_ce_loss(logit, y, cf, "mean")
    loss1 = F.cross_entropy(logit[y >= 0], y[y >= 0], reduction="sum")
    loss2 = counterfactual_ce_loss(logit[y < 0], y[y < 0], cf, "sum")
    return loss1 / logit.shape[0], loss2 / logit.shape[0]


def training_step(
    model: nn.Module,
    imgs: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    inpaint: str = "shuffle",
    f_inpaint: str = "shuffle",
    reg: str = "bbox_o",
    reg_coeff: float = 10.0,
    cf: str = "logp",
    cf_coeff: float = 1.0,
    is_mask_rect: bool = False,
    intended_grad_y: bool = False,
) -> dict[str, Tensor]:
    """base.py ``training_step`` for a batch dict with ``masks`` (1 = foreground): the total loss and its parts."""
    orig_len = len(imgs)
    has_bbox = (mask == 1).any(dim=3).any(dim=2).any(dim=1)
    if inpaint == "none" or has_bbox.sum() == 0:
        x, y = imgs, labels
    else:
        mask_cf = mask[has_bbox] if is_mask_rect else make_masks_as_rectangular(mask[has_bbox])
        impute_x = INPAINTERS[inpaint](imgs[has_bbox], 1 - mask_cf)
        x = torch.cat([imgs, impute_x], dim=0)
        y = torch.cat([labels, -labels[has_bbox] - 1], dim=0)  # -1: "not class 0", -2: "not class 1", ...
    if f_inpaint != "none" and has_bbox.any():
        impute_x = INPAINTERS[f_inpaint](imgs[has_bbox], mask[has_bbox], labels[has_bbox])
        x = torch.cat([x, impute_x], dim=0)
        y = torch.cat([y, labels[has_bbox]], dim=0)

    if reg == "none" or (~has_bbox).all():
        logits = model(x)
        reg_loss = logits.new_tensor(0.0)
    else:
        grad, logits = get_grad_y(x[:orig_len], y[:orig_len], model, intended=intended_grad_y)
        if torch.all(grad == 0.0):
            reg_loss = logits.new_tensor(0.0)
        else:  # bbox_o
            reg_loss = ((grad[has_bbox] * (1 - mask[has_bbox])) ** 2).mean().mul_(reg_coeff)
        if len(x) > orig_len:
            logits = torch.cat([logits, model(x[orig_len:])], dim=0)

    c, c_cf = counterfact_cri(logits, y, cf)
    c_cf = c_cf * cf_coeff
    return {"loss": c + c_cf + reg_loss, "ce": c, "cf": c_cf, "reg": reg_loss}


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor, clip: float = 1.0) -> None:
    """Lightning's step with ``gradient_clip_val=1.0`` (train_pl.py): backward, clip the norm, step."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
