"""Metadata augmentation: the meta set, its foreground masks, and its counterfactual and factual images.

The meta set is small, clean and class-balanced (the datasets layer provides it as
``aux["meta"]``: CIFAR-LT / noisy CIFAR's own, or ``--set dataset.meta_per_class=N`` on any
dataset). Its batches are normalised exactly as training batches (the core's
:class:`robust.loader.BatchLoader`) and drawn in random order, pass after pass
(:class:`MetaBatches`).

Each meta batch is augmented on the fly, for every image that has a foreground (the paper's
Φ_cf and Φ_f, with the core's infill operators, :mod:`robust_counterfactual.infill`):

* counterfactual (CF): the rectangle around the foreground is infilled (``cf_infill``), so the
  class evidence is gone; trained away from the label, ``−log(1 − p_y)``;
* factual (F): the background is infilled (``f_infill``), the foreground kept; trained with
  ``CE(y)``.

The meta loss (:func:`robust_counterfactual.counterfactual.counterfactual_batch_losses`) normalises as CFGen does: the CE sum (originals and F) and
the CF sum are both divided by the number of images in the enlarged batch.

Masks come from the dataset (``masks``, or ``bboxes`` rasterised), which may have had them
computed by a registered mask provider (``--set dataset.mask_provider=NAME``, :mod:`robust_counterfactual.masks`);
whether a split has them is :func:`robust_counterfactual.fidelity.split_has_foreground`.
"""

from __future__ import annotations

from typing import Any

import torch
from robust_counterfactual.infill import InfillContext, apply_infill, rectangle_mask
from torch import Tensor, nn

from robust.api import ArraySplit, Batch, BatchLoader, DataError, DatasetInfo, Split, StreamSplit, generator

# -- the meta set --------------------------------------------------------------------------


def in_memory(split: Split) -> ArraySplit:
    """The split as an :class:`ArraySplit` (a meta set is small: read a streamed one once)."""
    if isinstance(split, ArraySplit):
        return split
    if not isinstance(split, StreamSplit):
        raise TypeError(f"cannot read a {type(split).__name__}")
    images, masks = [], []
    for i in range(len(split)):
        image, mask = split.read(i)
        images.append(image)
        masks.append(mask)
    has_masks = bool(masks) and all(m is not None for m in masks)
    return ArraySplit(
        labels=split.labels,
        groups=split.groups,
        bias=split.bias,
        bboxes=split.bboxes,
        images=torch.stack(images),
        masks=torch.stack(masks) if has_masks else None,  # type: ignore[arg-type]
    )


# -- the meta batches ------------------------------------------------------------------------


class MetaBatches(nn.Module):
    """An endless stream of meta batches: each pass over the meta set in a fresh random order.

    The order of pass ``k`` is drawn from a generator seeded by the run's seed and ``k``; the pass
    and the position in it are buffers, so a resumed run draws the same meta batches. A pass ends
    when fewer than a full batch is left (``drop_last``, as the reference's meta loader); a meta set
    smaller than one batch is one batch.
    """

    def __init__(
        self,
        split: ArraySplit,
        info: DatasetInfo,
        device: torch.device,
        *,
        batch_size: int,
        seed: int,
        augmentation: str = "none",
        data_on_device: str = "auto",
    ) -> None:
        super().__init__()
        if len(split) == 0:
            raise DataError("The meta set is empty.")
        self.split = split
        self.seed = seed
        self.loader = BatchLoader(
            split,
            info,
            device,
            batch_size=min(batch_size, len(split)),
            augmentation=augmentation,
            expose_groups=False,
            data_on_device=data_on_device,
            num_workers=0,
        )
        self.register_buffer("pass_index", torch.zeros((), dtype=torch.long))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.split)

    def order(self, pass_index: int) -> Tensor:
        return torch.randperm(len(self.split), generator=generator(self.seed, "cpu", "clp-meta", pass_index))

    def next(self) -> Batch:
        size = self.loader.batch_size
        if int(self.cursor) + size > len(self.split):
            self.pass_index += 1
            self.cursor.zero_()
        pass_index, cursor = int(self.pass_index), int(self.cursor)
        chunk = self.order(pass_index)[cursor : cursor + size]
        augment = None
        if self.loader.augmentation != "none":
            augment = generator(self.seed, self.loader.device, "clp-meta-augment", pass_index, cursor)
        self.cursor += size
        return next(iter(self.loader.batches(chunk, generator=augment)))


# -- counterfactual and factual images ---------------------------------------------------------


class MetadataAugmentation(nn.Module):
    """CF and F images of a meta batch with the core's infill operators (randomness: torch's global
    generator, which the engine seeds and checkpoints)."""

    def __init__(
        self,
        cf_infill: str,
        f_infill: str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        fgsm_eps: float = 0.5,
        fgsm_alpha: float | None = None,
        noise_std: float = 0.2,
    ) -> None:
        super().__init__()
        self.cf_infill = cf_infill
        self.f_infill = f_infill
        self.fgsm_eps, self.fgsm_alpha, self.noise_std = fgsm_eps, fgsm_alpha, noise_std
        channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)

    @property
    def enabled(self) -> bool:
        return self.cf_infill != "none" or self.f_infill != "none"

    def _options(self, infill: str) -> dict[str, Any]:
        if infill == "fgsm":
            return {"eps": self.fgsm_eps, "alpha": self.fgsm_alpha}
        if infill == "random":
            return {"noise_std": self.noise_std}
        return {}

    def forward(self, x: Tensor, y: Tensor, mask: Tensor, model: nn.Module) -> tuple[Tensor | None, Tensor | None]:
        """``(x_cf, x_f)`` of images ``x`` that all have a foreground ``mask``; None where switched off.

        CF: the foreground's RECTANGLE is filled (keep = 1 − box), so no silhouette is left; F: the
        background is filled (keep = the mask). ``model`` is what ``fgsm`` attacks (in eval mode).
        """
        ctx = InfillContext(mean=self.mean, std=self.std, generator=None, labels=y, model=model, module=model)
        x_cf = x_f = None
        if self.cf_infill != "none":
            keep = 1.0 - rectangle_mask(mask)
            x_cf = apply_infill(self.cf_infill, x, keep, ctx, **self._options(self.cf_infill))
        if self.f_infill != "none":
            x_f = apply_infill(self.f_infill, x, mask, ctx, **self._options(self.f_infill))
        return x_cf, x_f


# -- the meta loss ---------------------------------------------------------------------------
