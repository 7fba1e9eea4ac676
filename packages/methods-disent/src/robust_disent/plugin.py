"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl

DISENT_PAPER = (
    "Lee, Kim, Lee, Lee, Choo. Learning Debiased Representation via Disentangled Feature Augmentation. NeurIPS 2021."
)
LFF_PAPER = "Nam, Cha, Ahn, Lee, Shin. Learning from Failure: Training Debiased Classifier from Biased Classifier. NeurIPS 2020."


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "disent",
        "robust_disent.disent:DisEnt",
        config="robust_disent.config:DisEntConfig",
        description="DisEnt: intrinsic and bias branches over concatenated features, LfF's relative-difficulty "
        "weights, and bias-feature swapping inside the batch to synthesise bias-conflicting features.",
        paper=DISENT_PAPER,
    )
    register(
        "lff",
        "robust_disent.lff:LfF",
        config="robust_disent.config:LfFConfig",
        description="Learning from Failure: a GCE-trained biased classifier and a debiased classifier trained "
        "with CE weighted by relative difficulty.",
        paper=LFF_PAPER,
    )
    register(
        "vanilla",
        "robust_disent.vanilla:Vanilla",
        config="robust_disent.config:VanillaConfig",
        description="DisEnt's vanilla baseline: ERM with Adam and DisEnt's per-dataset models and schedules.",
        paper=DISENT_PAPER,
    )


@hookimpl
def register_losses(register: Any) -> None:
    register(
        "gce",
        "robust_disent.losses:generalized_cross_entropy",
        config="robust_disent.losses:GCEConfig",
        description="Generalized cross-entropy (Zhang & Sabuncu 2018), by default as LfF/DisEnt compute it: "
        "CE times the detached q * p_y^q, whose gradient is q times the textbook GCE gradient.",
    )


@hookimpl
def register_paper_results(register: Any) -> None:
    """The paper's headline numbers, from paper_results.toml (``robust report --against-paper``)."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_disent")
