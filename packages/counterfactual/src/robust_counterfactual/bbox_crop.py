"""CFGen's training crop: enlarge to 256/224 and crop back at a random position that keeps part of the
foreground box, then flip (registered as the augmentation ``bbox_crop_flip``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import crop_at, random_flip, shift_boxes

BBOX_CROP_SCALE = 256 / 224  # CFGen: Resize(256, 256), then a 224 crop


def bbox_random_crop(
    x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, scale: float = BBOX_CROP_SCALE
):
    """Enlarge by ``scale`` and crop back to the input size at a random position that keeps part of
    the foreground box (CFGen's ``Resize(256) + RandomCrop(224)`` whose crop must contain at least
    one pixel of a box). Images without a box (x1 <= x0) are cropped anywhere. The mask is
    resized bilinearly and binarised (> 0: slightly dilated, as the reference's ceil)."""
    n, _, h, w = x.shape
    big_h, big_w = round(h * scale), round(w * scale)
    x = F.interpolate(x, size=(big_h, big_w), mode="bilinear", align_corners=False)
    if mask is not None:
        mask = (F.interpolate(mask, size=(big_h, big_w), mode="bilinear", align_corners=False) > 0).to(x.dtype)
    lo_i = torch.zeros(n, dtype=torch.long, device=x.device)
    lo_j = torch.zeros_like(lo_i)
    hi_i = torch.full_like(lo_i, big_h - h)
    hi_j = torch.full_like(lo_i, big_w - w)
    if bbox is not None:
        factor = torch.tensor([big_w / w, big_h / h, big_w / w, big_h / h], device=bbox.device)
        bbox = (bbox.to(x.device).float() * factor).round().long()
        has = (bbox[:, 2] > bbox[:, 0]) & (bbox[:, 3] > bbox[:, 1])
        # The crop [i, i + h) must overlap [y0, y1): i > y0 - h and i < y1 (likewise for columns).
        lo_i = torch.where(has, (bbox[:, 1] - h + 1).clamp(min=0), lo_i)
        lo_j = torch.where(has, (bbox[:, 0] - w + 1).clamp(min=0), lo_j)
        hi_i = torch.where(has, torch.minimum(bbox[:, 3] - 1, hi_i), hi_i)
        hi_j = torch.where(has, torch.minimum(bbox[:, 2] - 1, hi_j), hi_j)
    u = torch.rand(2, n, device=x.device, generator=gen)
    top = lo_i + (u[0] * (hi_i - lo_i + 1).float()).long().clamp(max=(hi_i - lo_i).clamp(min=0))
    left = lo_j + (u[1] * (hi_j - lo_j + 1).float()).long().clamp(max=(hi_j - lo_j).clamp(min=0))
    x = crop_at(x, top, left, h, w)
    if mask is not None:
        mask = crop_at(mask, top, left, h, w)
    if bbox is not None:
        bbox = shift_boxes(bbox, -left, -top, w, h)
    return x, mask, bbox


def bbox_crop_flip(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None):
    """:func:`bbox_random_crop`, then a random half of the batch mirrored (``pad`` is not used)."""
    x, mask, bbox = bbox_random_crop(x, mask, bbox, gen)
    return random_flip(x, mask, bbox, gen)
