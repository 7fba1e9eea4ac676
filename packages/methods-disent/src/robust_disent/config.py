"""Options of the three methods, named as the DisEnt paper names them.

Reference flags of ``kakaoenterprise/Learning-Debiased-Disentangled`` (train.py) and the paper's
symbols map as follows: ``lambda_dis`` = λ_dis (flag ``--lambda_dis_align``), ``lambda_swap_b``
= λ_swap_b (``--lambda_swap_align``), ``lambda_swap`` = λ_swap (``--lambda_swap``),
``curr_step`` = the step swapping starts (``--curr_step``), ``q`` = GCE's q, ``ema_alpha`` = α.
Defaults are train.py's; the per-dataset values of the released run scripts are presets
(:mod:`robust_disent.presets`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robust.api import ERMConfig, MethodConfig


class RelativeDifficultyConfig(MethodConfig):
    """What LfF and DisEnt share: Adam on two networks, GCE for the biased one, the loss EMA."""

    lr: float = Field(1e-3, gt=0, description="Adam learning rate of both networks (train.py default 1e-3).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay of both networks.")
    q: float = Field(
        0.7,
        gt=0,
        le=1,
        description="GCE exponent q (the reference hard-codes 0.7 and ignores its --q flag; we honour it).",
    )
    gce_form: Literal["reference", "textbook"] = Field(
        "reference",
        description="reference: CE * detached(q * p_y^q), as LfF/DisEnt compute it (gradient = q x GCE's); "
        "textbook: (1 - p_y^q) / q. The papers' lambdas were tuned with the reference form.",
    )
    ema_alpha: float = Field(
        0.7,
        ge=0,
        lt=1,
        description="Per-sample loss EMA: ema <- alpha * ema + (1 - alpha) * loss (LfF and DisEnt: 0.7).",
    )


class LfFConfig(RelativeDifficultyConfig):
    """Options of ``lff``: two independent classifiers, no schedule."""


class DisEntConfig(RelativeDifficultyConfig):
    """Options of ``disent`` (paper Eq. 2-4)."""

    lambda_dis: float = Field(
        1.0, ge=0, description="λ_dis: weight of the bias branch's GCE in L_dis (reference flag --lambda_dis_align)."
    )
    lambda_swap_b: float = Field(
        1.0,
        ge=0,
        description="λ_swap_b: weight of the bias branch's GCE on swapped features in L_swap (--lambda_swap_align).",
    )
    lambda_swap: float = Field(1.0, ge=0, description="λ_swap: weight of L_swap in the total loss (--lambda_swap).")
    curr_step: int = Field(
        0,
        ge=0,
        description="Feature swapping is on for steps > curr_step; the LR schedule starts counting at curr_step "
        "(train.py default 0; the run scripts use 10000).",
    )
    use_lr_decay: bool = Field(False, description="Step LR decay of both networks (reference --use_lr_decay).")
    lr_decay_step: int = Field(10000, ge=1, description="Steps between two LR decays (counted from curr_step).")
    lr_gamma: float = Field(0.1, gt=0, description="LR decay factor (train.py default 0.1; CMNIST/CIFAR10C 0.5).")


class VanillaConfig(ERMConfig):
    """ERM's options with DisEnt's vanilla defaults: Adam, no weight decay, constant LR."""

    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimiser (DisEnt: Adam).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (DisEnt: 0).")
