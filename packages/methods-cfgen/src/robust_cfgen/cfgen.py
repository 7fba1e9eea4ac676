"""CFGen (Chang, Adam, Goldenberg, CVPR 2021): Towards Robust Classification Model by
Counterfactual and Invariant Data Generation.

Each training batch is enlarged with, for every image that has a foreground:

* a **counterfactual** (CF) image: the rectangle around the foreground is infilled (``cf_infill``),
  so the class evidence is gone and only context remains; it is trained away from the label,
  ``-log(1 - p_y)``;
* a **factual** (F) image: the background is replaced (``f_infill``) and the foreground
  silhouette kept; it is trained with the label.

and, optionally, a **saliency** penalty (``reg=bbox_o``): the squared input gradient of the label
logit outside the foreground, trained by double backpropagation, so the model stops looking at
the background. Loss = CE + ``cf_coeff`` · CF loss + ``reg_coeff`` · penalty, with the reference's
normalisation (:mod:`robust_counterfactual.counterfactual`). The infills and the penalty are the core's
(:mod:`robust_counterfactual.infill`, :mod:`robust_counterfactual.saliency`), shared with CLP.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from robust_counterfactual.counterfactual import batch_foreground, counterfactual_batch_losses
from robust_counterfactual.fidelity import require_foreground
from robust_counterfactual.infill import InfillContext, apply_infill, has_foreground, rectangle_mask
from robust_counterfactual.saliency import input_gradient, outside_mask_penalty
from torch import Tensor

from robust.api import ERM, Batch, ConfigError, MethodContext
from robust_cfgen.config import CFGenConfig
from robust_cfgen.presets import CFGEN_PRESETS, DATASET_PRESETS


class CFGen(ERM):
    """ERM on batches enlarged with counterfactual and factual images, plus the saliency penalty."""

    Config = CFGenConfig
    config: CFGenConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = CFGEN_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = DATASET_PRESETS

    def __init__(self, config: CFGenConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        channels = ctx.info.input_shape[0]
        self.register_buffer("mean", torch.tensor(ctx.info.mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(ctx.info.std).view(1, channels, 1, 1), persistent=False)
        self.total_steps = ctx.epochs * ctx.steps_per_epoch
        if config.cf_infill == "cagan":
            raise ConfigError(
                "cf_infill=cagan trains on CA-GAN counterfactuals precomputed for every training image, and no "
                "registered dataset provides them yet. Use cf_infill=tile (the reference's other best option) or "
                "another infill: mean, random, shuffle."
            )
        parts = [
            *(["counterfactual (CF) images"] if config.cf_infill != "none" else []),
            *(["factual (F) images"] if config.f_infill != "none" else []),
            *(["the saliency penalty"] if config.reg != "none" else []),
        ]
        # False when nothing needs a foreground, or the user opted out (recorded): every batch is then plain.
        self.use_foreground = bool(parts) and require_foreground(
            ctx,
            method="cfgen",
            needs="its " + " and ".join(parts),
            splits={"training set": ctx.data.splits["train"]},
            allow_no_masks=config.allow_no_masks,
        )
        # Masks drawn from boxes (CCT) are infilled as they are for CF, as the reference does for boxes
        # (its is_mask_rect); segmentation masks are rectangularised first.
        self.masks_are_boxes = bool(ctx.info.extra.get("masks_are_boxes", False))

    @classmethod
    def default_amp(cls, config: CFGenConfig) -> str | None:
        """Double backprop under fp16 overflows (the README: use fp16 0 with Sal)."""
        return "off" if config.reg != "none" else None

    def infill_context(self, labels: Tensor) -> InfillContext:
        return InfillContext(
            mean=self.mean,
            std=self.std,
            generator=None,
            labels=labels,
            model=self.model,
            module=self.model,
        )

    def generate(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """CF images (foreground rectangle infilled) and F images (background infilled) of ``x``."""
        c = self.config
        x_cf = x_f = None
        if c.cf_infill != "none":
            region = mask if self.masks_are_boxes else rectangle_mask(mask)  # the box: no shape cue is left
            keep = 1.0 - region
            x_cf = apply_infill(c.cf_infill, x, keep, self.infill_context(y), **self._options(c.cf_infill))
        if c.f_infill != "none":
            x_f = apply_infill(c.f_infill, x, mask, self.infill_context(y), **self._options(c.f_infill))
        return x_cf, x_f

    def _options(self, infill: str) -> dict[str, Any]:
        c = self.config
        if infill == "fgsm":
            return {"eps": c.fgsm_eps, "alpha": c.fgsm_alpha}
        if infill == "random":
            return {"noise_std": c.noise_std}
        return {}

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        c = self.config
        x, y = batch.x, batch.y
        mask = batch_foreground(batch) if self.use_foreground else None
        fg = has_foreground(mask) if mask is not None else torch.zeros_like(y, dtype=torch.bool)
        x_cf = x_f = None
        if fg.any():
            x_cf, x_f = self.generate(x[fg], y[fg], mask[fg])
        extra = [t for t in (x_cf, x_f) if t is not None]
        reg_loss = x.new_zeros((), dtype=torch.float32)
        if c.reg != "none" and fg.any():
            logits, grad = input_gradient(self.model, x, y, "label_logit", literal_batch_index=c.literal_batch_index)
            reg_loss = c.reg_coeff * outside_mask_penalty(grad[fg], mask[fg], "mean_all")
            if c.reg_anneal > 0:  # the reference's ramp, not clamped at 1
                reg_loss = reg_loss * (step / (self.total_steps * c.reg_anneal))
            if extra:
                logits = torch.cat([logits, self.model(torch.cat(extra))])
        else:
            logits = self.model(torch.cat([x, *extra]))
        n, n_cf = len(y), 0 if x_cf is None else len(x_cf)
        labelled = torch.cat([logits[:n], logits[n + n_cf :]])
        labels = torch.cat([y, y[fg]]) if x_f is not None else y
        cf_logits = logits[n : n + n_cf] if n_cf else None
        c_loss, cf_loss = counterfactual_batch_losses(labelled, labels, cf_logits, y[fg] if n_cf else None, c.cf)
        loss = c_loss + c.cf_coeff * cf_loss + reg_loss
        self.optimize(loss, clip_grad_norm=c.clip_grad_norm)
        return {"loss": loss.detach(), "ce": c_loss.detach(), "cf": cf_loss.detach(), "reg": reg_loss.detach()}
