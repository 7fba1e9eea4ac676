"""Training augmentation applied to whole batches on the device (airbench style: no PIL, no
per-sample Python). Geometric changes are applied to masks and boxes too, so that methods that
use the foreground (CFGen, CLP) see masks that still match their images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.errors import ConfigError

AUGMENTATIONS = ("none", "flip", "crop_flip")


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


def random_translate(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int):
    """Zero-pad by ``pad`` pixels and crop back at a random offset (the CIFAR "random crop")."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]

    def crop(t: Tensor) -> Tensor:
        padded = F.pad(t, (pad, pad, pad, pad))
        channels = torch.arange(t.shape[1], device=t.device)[None, :, None, None]
        return padded[batch, channels, rows, cols]

    x = crop(x)
    if mask is not None:
        mask = crop(mask)
    if bbox is not None:
        shift = torch.stack([pad - dx, pad - dy, pad - dx, pad - dy], dim=1)
        bbox = bbox + shift
        limit = torch.tensor([w, h, w, h], device=bbox.device)
        bbox = torch.minimum(bbox.clamp(min=0), limit)
    return x, mask, bbox


def augment(
    kind: str, x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None
):
    """Apply augmentation ``kind`` to a float batch (and its masks and boxes).

    ``pad``: zero padding of ``crop_flip`` in pixels; None = an eighth of the image side (4 on CIFAR).
    """
    if kind == "none":
        return x, mask, bbox
    if kind == "crop_flip":
        x, mask, bbox = random_translate(x, mask, bbox, gen, pad=max(1, x.shape[-1] // 8) if pad is None else pad)
    return random_flip(x, mask, bbox, gen)
