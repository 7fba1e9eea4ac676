"""CFGen's options, named as the reference's flags (zzzace2000/robust_cls_model, train_pl.py).

The option names are CLP's and the counterfactual package's (``cf_infill``, ``f_infill``); the
reference's ``inpaint`` and ``f_inpaint`` are accepted as the same options. The reference's defaults
turn everything off (``inpaint=none``, ``f_inpaint=none``,
``reg=none``: plain fine-tuning). ``robust run cfgen`` means the method, so our defaults are the
combination the README recommends and runs: counterfactuals by ``tile`` (README: "cagan or tile
perform the best"; cagan needs precomputed images), factuals by ``shuffle``, and the ``bbox_o``
saliency penalty with ``reg_coeff`` 10 (the README's example). ``--set cf_infill=none`` etc. give the
ablations (CF only, F only, Sal only).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from robust_counterfactual.fidelity import ALLOW_NO_MASKS_HELP

from robust.api import ERMConfig


class CFGenConfig(ERMConfig):
    """ERM's optimiser and schedule options plus the augmentations and the penalty."""

    cf_infill: Literal["none", "mean", "random", "shuffle", "tile", "cagan"] = Field(
        "tile",
        validation_alias=AliasChoices("cf_infill", "inpaint"),  # the reference's --inpaint
        description="Counterfactual (CF) images: the infill that replaces the rectangle around the foreground "
        "(trained away from the label). none = no CF images.",
    )
    f_infill: Literal["none", "random", "shuffle", "mrand", "fgsm", "mean", "tile"] = Field(
        "shuffle",
        validation_alias=AliasChoices("f_infill", "f_inpaint"),  # the reference's --f_inpaint
        description="Factual (F) images: the infill that replaces the background, keeping the foreground "
        "silhouette and the label. none = no F images.",
    )
    cf: Literal["logp", "uni", "uni_e"] = Field(
        "logp",
        description="CF loss: logp = -log(1 - p_y); uni = CE to the uniform distribution; uni_e = CE to the "
        "uniform distribution over the other classes.",
    )
    cf_coeff: float = Field(1.0, ge=0, description="Weight of the CF loss.")
    reg: Literal["none", "bbox_o"] = Field(
        "bbox_o", description="Saliency penalty: bbox_o = squared input gradient outside the foreground."
    )
    reg_grad: Literal["grad_y"] = Field(
        "grad_y", description="The saliency penalised: grad_y = input gradient of the label logit."
    )
    reg_coeff: float = Field(10.0, ge=0, description="Weight of the saliency penalty (the README's example: 10).")
    reg_anneal: float = Field(
        0.0,
        ge=0,
        description="> 0: ramp the penalty linearly up to full strength over this fraction of training (0 = off).",
    )
    literal_batch_index: bool = Field(
        False,
        description="The reference's grad_y indexes logits[:, y] (every image's logits of every label in the "
        "batch); true reproduces that, false (default) uses each image's own label logit, as intended.",
    )
    fgsm_eps: float = Field(0.6, gt=0, description="FGSM factual background: L-inf radius (normalised units).")
    fgsm_alpha: float | None = Field(None, gt=0, description="FGSM step size (None = 1.25 * eps, as the reference).")
    noise_std: float = Field(0.2, ge=0, description="random infill: std of the per-pixel noise on the colour.")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm (the reference: 1.0).")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (L2).")
    allow_no_masks: bool = Field(False, description=ALLOW_NO_MASKS_HELP)
