"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl

PRUSC_PAPER = (
    "Le, Schlötterer, Seifert. Out of Spuriousity: Improving Robustness to Spurious Correlations without Group "
    "Annotations. TMLR (arXiv 2407.14974)."
)
IRM_AFE_PAPER = (
    "Le, Seifert, Schlötterer. Invariant Learning with Annotation-free Environments. UniReps workshop 2024 "
    "(arXiv 2504.15686)."
)


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "prusc",
        "robust_prusc.prusc:PruSC",
        config="robust_prusc.config:PruSCConfig",
        description="Spurious-free subnetworks: ERM, k-means on its representations (pseudo groups), learnable "
        "weight masks trained with a cluster-contrastive loss and a sparsity penalty, then the kept subnetwork "
        "retrained. No group labels in training.",
        paper=PRUSC_PAPER,
    )
    register(
        "irm-afe",
        "robust_prusc.irm_afe:IRMAFE",
        config="robust_prusc.config:IRMAFEConfig",
        description="IRMv1 on two environments built from the clusters of an ERM model's representations "
        "(minority and balanced), instead of annotated environments.",
        paper=IRM_AFE_PAPER,
    )


@hookimpl
def register_paper_results(register: Any) -> None:
    """The paper's headline numbers, from paper_results.toml (none yet: the file says why)."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_prusc")
