"""Training augmentation applied to whole batches on the device (airbench style: no PIL, no
per-sample Python). Geometric changes are applied to masks and boxes too, so that methods that
use the foreground (CFGen, CLP) see masks that still match their images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.errors import ConfigError

AUGMENTATIONS = ("none", "flip", "crop_flip", "crop_flip_reflect", "bbox_crop_flip")
# How each pad-and-crop kind fills the pad: zeros, or the image mirrored at its border (torchvision's
# RandomCrop(padding_mode="reflect"), the CIFAR crop of CLP's CIFAR_process.py).
CROP_PADDING_MODES = {"crop_flip": "zeros", "crop_flip_reflect": "reflect"}
BBOX_CROP_SCALE = 256 / 224  # CFGen: Resize(256, 256), then a 224 crop


def check_augmentation(kind: str) -> str:
    if kind not in AUGMENTATIONS:
        raise ConfigError(f"Unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}.")
    return kind


def random_flip(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator):
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if mask is not None:
        mask = torch.where(flip[:, None, None, None], mask.flip(-1), mask)
    if bbox is not None:
        width = x.shape[-1]
        mirrored = torch.stack([width - bbox[:, 2], bbox[:, 1], width - bbox[:, 0], bbox[:, 3]], dim=1)
        bbox = torch.where(flip[:, None], mirrored, bbox)
    return x, mask, bbox


def crop_at(t: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """Per image ``i``, the ``height x width`` window of ``t`` at ``(top[i], left[i])``: one gather."""
    n, channels = t.shape[:2]
    rows = (top[:, None] + torch.arange(height, device=t.device)[None])[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=t.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=t.device)[:, None, None, None]
    return t[batch, torch.arange(channels, device=t.device)[None, :, None, None], rows, cols]


def _shift_boxes(bbox: Tensor, dx: Tensor, dy: Tensor, width: int, height: int) -> Tensor:
    """Boxes moved by ``(dx, dy)`` and clipped to the ``width x height`` image."""
    moved = bbox + torch.stack([dx, dy, dx, dy], dim=1)
    return torch.minimum(moved.clamp(min=0), torch.tensor([width, height, width, height], device=bbox.device))


def random_translate(
    x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int, padding_mode: str = "zeros"
):
    """Pad by ``pad`` pixels and crop back at a random offset (the CIFAR "random crop").

    ``padding_mode``: ``zeros`` (black borders), or ``reflect``: the image mirrored at its border
    without repeating the edge pixel, as torchvision's ``RandomCrop(padding_mode="reflect")``. The
    mask is padded the same way, so it stays the image's; a box is only moved (the mirrored copy of
    an object near the border lies outside it).
    """
    if padding_mode not in ("zeros", "reflect"):
        raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
    n, _, h, w = x.shape
    if padding_mode == "reflect" and pad >= min(h, w):
        raise ConfigError(f"Reflect padding of {pad} pixels needs images larger than that; these are {h}x{w}.")
    mode = "constant" if padding_mode == "zeros" else "reflect"
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    x = crop_at(F.pad(x, (pad, pad, pad, pad), mode=mode), dy, dx, h, w)
    if mask is not None:
        mask = crop_at(F.pad(mask, (pad, pad, pad, pad), mode=mode), dy, dx, h, w)
    if bbox is not None:
        bbox = _shift_boxes(bbox, pad - dx, pad - dy, w, h)
    return x, mask, bbox


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
        bbox = _shift_boxes(bbox, -left, -top, w, h)
    return x, mask, bbox


def augment(
    kind: str, x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None
):
    """Apply augmentation ``kind`` to a float batch (and its masks and boxes).

    ``pad``: the padding of ``crop_flip`` (zeros) and ``crop_flip_reflect`` (mirrored border) in
    pixels; None = an eighth of the image side (4 on CIFAR).
    """
    if kind == "none":
        return x, mask, bbox
    if kind == "bbox_crop_flip":
        x, mask, bbox = bbox_random_crop(x, mask, bbox, gen)
    elif kind in CROP_PADDING_MODES:
        pad = max(1, x.shape[-1] // 8) if pad is None else pad
        x, mask, bbox = random_translate(x, mask, bbox, gen, pad=pad, padding_mode=CROP_PADDING_MODES[kind])
    return random_flip(x, mask, bbox, gen)
