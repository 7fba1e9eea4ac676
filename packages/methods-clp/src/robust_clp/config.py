"""CLP's options, named after the released training script's flags (xiaolingzhou98/CLP, ``CLP_train.py``).

The optimiser defaults are that script's: SGD, lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4,
lr × 0.01 at epoch 160 and again at 180. The perturbation network's are its ``--meta_lr`` 1e-3,
``--meta_weight_decay`` 1e-4, ``--meta_net_hidden_size`` 100 and ``--meta_net_num_layers`` 2;
the saliency strength its ``--lambda_`` 0.5.

The infills: the script's flags default to ``--forground mean --background shuffle``, but the
script cannot run with them (it reads ``args.foreground``, which does not exist) and its
composition returns the original image. The paper's ablation finds the best combinations
CF(CAGAN)+F(Random) and CF(Tile)+F(Shuffle); CAGAN needs precomputed images that no dataset here
provides, so the defaults are ``cf_infill=tile``, ``f_infill=shuffle`` (the paper's CIFAR-10
10:1 headline configuration). See the README's list of decisions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from robust_counterfactual.fidelity import ALLOW_NO_MASKS_HELP

from robust.api import ERMConfig


class CLPConfig(ERMConfig):
    """ERM's optimiser options (the classifier's) plus the perturbation network, the meta set and its augmentation."""

    # -- the classifier's optimiser: CLP_train.py's defaults ----------------------------------
    lr: float = Field(0.1, gt=0, description="Learning rate of the classifier (also the virtual step's).")
    nesterov: bool = Field(True, description="Nesterov momentum for SGD (the reference: true).")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay of the classifier.")
    schedule: Literal["constant", "cosine", "step", "plateau"] = Field(
        "step", description="Learning-rate schedule of the classifier (the reference: ×0.01 at 160 and at 180)."
    )
    milestones: list[int] = Field(
        default_factory=lambda: [160, 180], description="Epochs at which `step` multiplies the lr by `gamma`."
    )
    gamma: float = Field(0.01, gt=0, description="Factor of the `step` and `plateau` schedules.")

    # -- the perturbation network ----------------------------------------------------------
    perturb_mode: Literal["vector", "label_only"] = Field(
        "vector",
        description="vector: a C-dimensional perturbation per sample (the paper's framework); label_only: one "
        "scalar per sample added to the label's logit (the reference's commented-out variant).",
    )
    meta_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the perturbation network.")
    meta_weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay of the perturbation network.")
    meta_grad: Literal["jvp", "unrolled"] = Field(
        "jvp",
        description="How the meta-gradient through the virtual step is computed (the same value): unrolled = "
        "backpropagate through the virtual SGD step (create_graph), as the reference; jvp = one forward-mode "
        "product through the classifier, no second-order backward pass (faster; not with "
        "differentiable_characteristics).",
    )
    differentiable_characteristics: bool = Field(
        False,
        description="The virtual step's gradient also flows through the ten characteristics (which depend on θ) "
        "into the perturbation network, as the released code (it does not detach them there; its real step does). "
        "Off: the characteristics are inputs in both steps. Needs meta_grad=unrolled.",
    )
    meta_hidden_size: int = Field(100, ge=1, description="Width of the perturbation network's hidden layers.")
    meta_num_layers: int = Field(2, ge=1, description="Hidden layers of the perturbation network.")

    # -- the meta set ----------------------------------------------------------------------
    meta_batch_size: int | None = Field(
        None, ge=2, description="Meta batch size (None: the training batch size, as the reference)."
    )
    meta_batch_counts: Literal["images", "originals"] = Field(
        "images",
        description="What meta_batch_size counts. images: every image of the meta step, its CF and F images "
        "included (each meta batch draws meta_batch_size // 3 meta images with both infills on), as the release, "
        "whose meta loader draws batches of the training batch size from the augmented meta set; originals: the "
        "meta images drawn, each adding its CF and F images (up to 3x the images and the meta step's cost).",
    )
    meta_augment: bool = Field(
        False,
        description="Apply the training augmentation (crop, flip) to meta batches too. The reference's meta set "
        "is a copy of the training set object and keeps its transforms; off by default (a clean meta set).",
    )

    # -- metadata augmentation and saliency -------------------------------------------------
    cf_infill: Literal["none", "mean", "random", "shuffle", "tile"] = Field(
        "tile",
        description="Counterfactual meta images: the infill of the rectangle around the foreground; trained with "
        "-log(1 - p_y). none = no CF images.",
    )
    f_infill: Literal["none", "random", "shuffle", "mrand", "fgsm"] = Field(
        "shuffle",
        description="Factual meta images: the infill of the background, foreground kept; trained with CE(y). "
        "none = no F images.",
    )
    lambda_: float = Field(
        0.5,
        ge=0,
        description="Strength of the saliency term: per image, the squared gradient of the batch's summed CE with "
        "respect to the input, summed over channels and averaged over the background pixels; averaged over the "
        "images with a foreground; on the training and the meta batches.",
    )
    allow_no_masks: bool = Field(False, description=ALLOW_NO_MASKS_HELP)
    fgsm_eps: float = Field(0.5, gt=0, description="f_infill=fgsm: L-inf radius in normalised units (the paper: 0.5).")
    fgsm_alpha: float | None = Field(None, gt=0, description="f_infill=fgsm: step size (None: 1.25 * eps).")
    noise_std: float = Field(0.2, ge=0, description="random infill: std of the per-pixel noise on the colour.")
