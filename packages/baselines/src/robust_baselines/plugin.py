"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl

JTT_PAPER = (
    "Liu, Haghgoo, Chen, Raghunathan, Koh, Sagawa, Liang, Finn. Just Train Twice: Improving Group Robustness "
    "without Training Group Information. ICML 2021."
)
DFR_PAPER = (
    "Kirichenko, Izmailov, Wilson. Last Layer Re-Training is Sufficient for Robustness to Spurious Correlations. "
    "ICLR 2023."
)
BALANCING_PAPER = (
    "Idrissi, Arjovsky, Pezeshki, Lopez-Paz. Simple data balancing achieves competitive worst-group-accuracy. "
    "CLeaR 2022."
)
CVAR_PAPER = "Levy, Carmon, Duchi, Sidford. Large-Scale Methods for Distributionally Robust Optimization. NeurIPS 2020."
REBALANCING = {
    "subg": ("SubsampleGroups", "every group subsampled once to the size of the smallest (group labels)"),
    "rwg": ("ReweightGroups", "batches drawn with weights 1/n_g, with replacement (group labels)"),
    "suby": ("SubsampleClasses", "every class subsampled once to the size of the smallest (no group labels)"),
    "rwy": ("ReweightClasses", "batches drawn with weights 1/n_y, with replacement (no group labels)"),
}


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "jtt",
        "robust_baselines.jtt:JTT",
        config="robust_baselines.config:JTTConfig",
        description="Just Train Twice: ERM for T epochs, its misclassified training samples (the error set) "
        "upsampled lambda_up times in a second training from scratch. No group labels in training.",
        paper=JTT_PAPER,
    )
    register(
        "dfr",
        "robust_baselines.dfr:DFR",
        config="robust_baselines.config:DFRConfig",
        description="Deep Feature Reweighting (DFR^Tr_Val): a trained model's last layer refit by L1 logistic "
        "regression on group-balanced validation features, averaged over resamples. Reads val group labels.",
        paper=DFR_PAPER,
    )
    for name, (cls, what) in REBALANCING.items():
        register(
            name,
            f"robust_baselines.rebalancing:{cls}",
            config="robust_baselines.config:RebalanceConfig",
            description=f"{name.upper()}: ERM with {what}.",
            paper=BALANCING_PAPER,
        )
    register(
        "cvar_dro",
        "robust_baselines.cvar_dro:CVaRDRO",
        config="robust_baselines.config:CVaRDROConfig",
        description="CVaR DRO: the mean of the worst alpha fraction of each batch's losses (Levy et al.'s batch "
        "estimator, as SubpopBench). No group labels.",
        aliases=("cvar-dro",),
        paper=CVAR_PAPER,
    )
    register(
        "chi2_dro",
        "robust_baselines.chi2_dro:Chi2DRO",
        config="robust_baselines.config:Chi2DROConfig",
        description="χ²-DRO: each batch's losses reweighted by the worst p in the χ² ball of radius rho around "
        "uniform (Levy et al.'s batch estimator, fast-dro's RobustLoss(rho, 0, 'chi-square')). No group labels.",
        aliases=("chi2-dro",),
        paper=CVAR_PAPER,
    )


@hookimpl
def register_paper_results(register: Any) -> None:
    """The papers' headline numbers, from paper_results.toml (unverified: the file says where each is from)."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_baselines")
