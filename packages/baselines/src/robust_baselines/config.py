"""Options of the baselines, named after the released code's flags where it has them
(anniesch/jtt ``run_expt.py``, PolinaKirichenko/deep_feature_reweighting ``dfr_evaluate_spurious.py``,
facebookresearch/BalancingGroups ``train.py``, SubpopBench ``hparams_registry.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robust.api import ERMConfig

#: dfr_evaluate_spurious.py's C_OPTIONS for Waterbirds (sklearn's C = 1/λ of the L1 penalty).
DFR_C_GRID = [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
#: The same file's commented-out CelebA grid.
DFR_C_GRID_CELEBA = [3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003]


class JTTConfig(ERMConfig):
    """Identification ERM (T epochs), the error set, then a fresh model trained with it upsampled."""

    identification_epochs: int = Field(
        1, ge=1, description="T: epochs of the identification ERM model (the paper: 60 Waterbirds, 1 CelebA)."
    )
    lambda_up: int = Field(
        5, ge=1, description="λ_up: an error-set sample counts λ_up times per retraining epoch (paper: 100 / 50)."
    )
    upweight_convention: Literal["paper", "released"] = Field(
        "paper",
        description="paper: λ_up copies of each error-set sample (the paper's J_up weights it λ_up); released: "
        "1 + λ_up copies, as run_expt.py's --up_weight appends λ_up copies to the training set.",
    )
    error_set_from: Literal["final_model", "training_pass"] = Field(
        "final_model",
        description="final_model: samples the identification model misclassifies after T epochs (eval mode, "
        "unaugmented: the paper); training_pass: the predictions made during epoch T's training pass (train "
        "mode, augmented, before each batch's step), which the released code writes to output_train_epoch_T.csv.",
    )


class DFRConfig(ERMConfig):
    """The base model (trained here with ERM's options, or ``--from RUN_DIR``) and the last-layer refit."""

    from_run: str | None = Field(
        None, description="Take the base model from this run directory (`robust run erm --out DIR`): `--from DIR`."
    )
    from_checkpoint: str = Field(
        "last", description="Which model of --from: last, a selection rule (best_val_avg...) or phase-NAME."
    )
    base_epochs: int | None = Field(None, ge=1, description="Epochs of the base ERM phase (None: train.epochs).")
    c_grid: list[float] = Field(
        default_factory=lambda: list(DFR_C_GRID),
        min_length=1,
        description="Inverse L1 strengths tried (dfr_evaluate_spurious.py's C_OPTIONS, Waterbirds).",
    )
    num_retrains: int = Field(
        20, ge=1, description="Balanced resamples of val whose logistic regressions are averaged (official: 20)."
    )
    tune_retrains: int = Field(
        1, ge=1, description="Random halvings of val the C grid is scored on, summed (official: 1)."
    )
    preprocess: bool = Field(
        True, description="Standardise the features (official: StandardScaler; fitted on the training features)."
    )
    dfr_seed: int = Field(0, description="Seed of the halving and balanced resampling (numpy's RandomState).")


class RebalanceConfig(ERMConfig):
    """ERM on rebalanced data: the balancing is the method's name, no option changes it."""

    subsample_seed: int | None = Field(
        None, description="Seed of the subsample drawn once before training (SUBG/SUBY; None: the run's seed)."
    )


class CVaRDROConfig(ERMConfig):
    alpha: float = Field(
        0.1,
        gt=0,
        le=1,
        description="α: the fraction of each batch's largest losses averaged (SubpopBench's joint_dro_alpha, 0.1; "
        "1 is ERM).",
    )


class Chi2DROConfig(ERMConfig):
    rho: float = Field(
        1.0,
        ge=0,
        description="ρ: the radius of the χ² ball, ½·mean((m·p − 1)²) ≤ ρ (fast-dro's `size`; its chi-square "
        "runs use 1.0; 0 is ERM).",
    )
    bisection_tol: float = Field(1e-4, gt=0, description="Tolerance on the χ² constraint (fast-dro's tol, 1e-4).")
    bisection_max_iter: int = Field(1000, ge=1, description="Most bisection halvings for η (fast-dro's, 1000).")
