"""Foreground masks for datasets that have none, from a registered mask provider.

Methods that need the foreground (CLP's metadata augmentation and saliency term, CFGen) read it
from the dataset. When a dataset has no masks, ``--set dataset.mask_provider=NAME`` (an option every
dataset accepts: this package's dataset transform ``mask_provider``) computes them for the training split and the
meta set with a provider registered through the ``register_mask_providers`` hook (CLP's authors used
an image-matting model). In-memory splits get their masks once; streamed splits per read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from robust.api import ArraySplit, DataError, DatasetBundle, Split, StreamSplit, get_registry, replace_splits
from robust_counterfactual.mask_options import MaskProviderOptions

MaskProvider = Callable[[Tensor], Tensor]
PROVIDER_CHUNK = 256  # images per provider call


def provider_masks(provider: MaskProvider, images: Tensor, name: str = "mask provider") -> Tensor:
    """``provider``'s masks of uint8 ``images`` ``(N, C, H, W)``, checked, as uint8 ``(N, 1, H, W)`` in {0, 255}."""
    n, _, h, w = images.shape
    out = []
    for start in range(0, n, PROVIDER_CHUNK):
        part = images[start : start + PROVIDER_CHUNK].cpu()
        masks = provider(part)
        if not isinstance(masks, Tensor) or tuple(masks.shape) != (len(part), 1, h, w):
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise DataError(
                f"The {name} must return a uint8 tensor of shape ({len(part)}, 1, {h}, {w}) for images of shape "
                f"{tuple(part.shape)}, got {got}."
            )
        out.append(torch.where(masks.cpu() > 127, 255, 0).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, 1, h, w, dtype=torch.uint8)


class ProviderMaskedSplit(StreamSplit):
    """A streamed split whose ``read`` adds the provider's mask of each image (computed per read)."""

    def __init__(self, base: StreamSplit, provider: MaskProvider, name: str) -> None:
        self.base = base
        self.provider = provider
        self.name = name
        self.labels, self.groups, self.bias, self.bboxes = base.labels, base.groups, base.bias, base.bboxes
        self.preferred_workers = base.preferred_workers

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        image, _ = self.base.read(index)
        return image, provider_masks(self.provider, image[None], self.name)[0]


def with_provider_masks(split: Split, provider: MaskProvider, name: str = "mask provider") -> Split:
    """``split`` with its masks replaced by ``provider``'s: computed now for an in-memory split, per
    read for a streamed one."""
    if isinstance(split, ArraySplit):
        return dataclasses.replace(split, masks=provider_masks(provider, split.images, name))
    if isinstance(split, StreamSplit):
        return ProviderMaskedSplit(split, provider, name)
    raise TypeError(f"cannot add masks to a {type(split).__name__}")


def get_mask_provider(name: str, weights: str | None = None) -> MaskProvider:
    """The provider registered under ``name`` (a clear error with suggestions otherwise).

    A provider registered as a class (a model with weights to load) is instantiated, with
    ``weights=`` (``dataset.mask_weights``) when given; a function is used as it is.
    """
    provider = get_registry().get("mask_provider", name).load()
    if isinstance(provider, type):
        return provider(weights=weights) if weights is not None else provider()
    if weights is not None:
        raise DataError(
            f"dataset.mask_weights is for mask providers that load a model; {name!r} is a function that takes no "
            "weights. Leave mask_weights out, or choose a model-based provider (robust list mask-providers)."
        )
    return provider


def provide_masks(bundle: DatasetBundle, options: MaskProviderOptions) -> DatasetBundle:
    """The ``mask_provider`` dataset transform: the training split and the meta set with the provider's masks."""
    if options.mask_provider is None:
        return bundle
    provider = get_mask_provider(options.mask_provider, options.mask_weights)
    label = f"mask provider {options.mask_provider!r}"
    splits, aux = dict(bundle.splits), dict(bundle.aux)
    splits["train"] = with_provider_masks(splits["train"], provider, label)
    if "meta" in aux:
        aux["meta"] = with_provider_masks(aux["meta"], provider, label)
    return replace_splits(
        bundle, splits, aux, transform_options=options.model_dump(exclude_defaults=True), has_masks=True
    )
