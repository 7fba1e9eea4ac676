"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl

CLP_PAPER = (
    "Zhou, Ye, Xie, Zhang. Mitigating Spurious Correlations with Causal Logit Perturbation. Information Sciences."
)


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "clp",
        "robust_clp.clp:CLP",
        config="robust_clp.config:CLPConfig",
        description="Causal Logit Perturbation: a perturbation network maps ten training characteristics to a "
        "per-sample logit perturbation, meta-learned online on a clean meta set augmented with counterfactual "
        "and factual images, plus an input-gradient saliency term outside the foreground.",
        paper=CLP_PAPER,
    )


@hookimpl
def register_paper_results(register: Any) -> None:
    """The paper's headline numbers, from paper_results.toml (``robust report --against-paper``)."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_clp")
