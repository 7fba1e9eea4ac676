"""Training augmentation applied to whole batches on the device (airbench style: no PIL, no
per-sample Python). Geometric changes are applied to masks and boxes too, so that methods that
use the foreground (CFGen, CLP) see masks that still match their images.

``train.augment`` names a registered augmentation (``register_augmentations``): the core registers
``none``, ``flip``, ``crop_flip`` and ``crop_flip_reflect``; plugins add theirs (robust-counterfactual's
``bbox_crop_flip``). Each is ``function(x, mask, bbox, generator, pad=None) -> (x, mask, bbox)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.errors import ConfigError


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


def shift_boxes(bbox: Tensor, dx: Tensor, dy: Tensor, width: int, height: int) -> Tensor:
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
        bbox = shift_boxes(bbox, pad - dx, pad - dy, w, h)
    return x, mask, bbox


def no_augmentation(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None):
    """The batch unchanged."""
    return x, mask, bbox


def flip(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None):
    """A random half of the batch mirrored left-right."""
    return random_flip(x, mask, bbox, gen)


def crop_flip(x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None):
    """Pad with zeros by ``pad`` pixels (None: an eighth of the side, 4 on CIFAR), crop back, then flip."""
    return _pad_crop_flip(x, mask, bbox, gen, pad, "zeros")


def crop_flip_reflect(
    x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None
):
    """The same with the border mirrored (torchvision's ``padding_mode='reflect'``)."""
    return _pad_crop_flip(x, mask, bbox, gen, pad, "reflect")


def _pad_crop_flip(x, mask, bbox, gen, pad, padding_mode):
    pad = max(1, x.shape[-1] // 8) if pad is None else pad
    x, mask, bbox = random_translate(x, mask, bbox, gen, pad=pad, padding_mode=padding_mode)
    return random_flip(x, mask, bbox, gen)


def augment(
    kind: str, x: Tensor, mask: Tensor | None, bbox: Tensor | None, gen: torch.Generator, pad: int | None = None
):
    """Apply the registered augmentation ``kind`` to a float batch (and its masks and boxes)."""
    from robust.registry import get_registry

    if kind == "none":
        return x, mask, bbox
    return get_registry().get("augmentation", kind).load()(x, mask, bbox, gen, pad=pad)
