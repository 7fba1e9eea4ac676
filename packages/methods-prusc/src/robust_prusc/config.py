"""Options of PruSC and IRM-AFE, named after the official code's flags (aix-group/prusc ``run.py``,
``invariant_learning/irm.py``) where it has them.

Both start the same way: an ERM model (trained here with ERM's options, or taken from another run
directory with ``--from``), whose penultimate representations are clustered (k-means, cosine
distance, 16 clusters, all classes together: ``cluster/clustering.py``). The clusters stand in for
the unknown spurious attribute; no group label is read in training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robust.api import ERMConfig


class PseudoGroupConfig(ERMConfig):
    """The ERM phase (ERM's optimiser options) and the clustering of its representations."""

    from_run: str | None = Field(
        None,
        description="Take the ERM model from this run directory (`robust run erm --out DIR`; same dataset and "
        "model) instead of training it: `--from DIR`.",
    )
    from_checkpoint: str = Field(
        "last",
        description="Which model of --from: last (as training left it), a selection rule (best_val_avg...; not a "
        "group-based one if group labels must stay unused), or phase-NAME (the end of a phase of a multi-phase "
        "run: phase-erm reuses the ERM model of a prusc run).",
    )
    erm_epochs: int | None = Field(None, ge=1, description="Epochs of the ERM phase (None: train.epochs).")
    num_clusters: int = Field(16, ge=1, description="k of the k-means (the official code: 16; 8 for ColoredMNIST).")
    cluster_mode: Literal["all", "per_class"] = Field(
        "all",
        description="all: one k-means over every training sample (the official code); per_class: num_clusters "
        "clusters within each class (its commented-out variant).",
    )
    cluster_seed: int = Field(1, description="Seed of the k-means (the official clustering script: 1).")
    cluster_restarts: int = Field(
        10,
        ge=1,
        description="k-means runs from this many seedings and keeps the tightest (scikit-learn's n_init; the "
        "reference runs once, and one unlucky seeding can merge two clear clusters).",
    )
    clusters: str | None = Field(
        None,
        description="A cluster assignment CSV (index,label,cluster) to use instead of clustering: one this "
        "method wrote (RUN_DIR/clusters.csv) or made by hand.",
    )


class PruSCConfig(PseudoGroupConfig):
    """ERM, clustering, pruning with learnable weight masks, retraining the kept subnetwork."""

    # -- pruning (training/pruning.py, prune/*) ---------------------------------------------
    pruning_ep: int = Field(20, ge=0, description="Epochs of mask learning (the official default: 20).")
    lr_prune: float = Field(1e-2, gt=0, description="Adam learning rate of the mask logits (official: 1e-2).")
    lambda_sparse: float = Field(
        1e-8, ge=0, description="Weight of the sparsity penalty, the sum of all mask logits (official: 1e-8)."
    )
    lambda_con_prune: float = Field(
        0.1, ge=0, description="Weight of the cluster-contrastive loss while pruning (official: 0.1)."
    )
    temperature: float = Field(0.07, gt=0, description="Temperature of the contrastive loss (official: 0.07).")
    mask_init: float = Field(1.5, description="Initial mask logit of every weight (official: 1.5, nearly dense).")
    gumbel_tau: float = Field(1.0, gt=0, description="Temperature of the Gumbel-sigmoid mask sample (official: 1).")
    mask_sample: Literal["logit", "dcwp"] = Field(
        "logit",
        description="logit: sigmoid((π + g)/τ), P(keep) = sigmoid(π), consistent with the fixed mask π ≥ 0 "
        "(Csordás et al.); dcwp: the released code's sigmoid((sigmoid(π) + g)/τ), P(keep) within 0.5-0.73.",
    )
    prune_sampling: Literal["cluster_balanced", "uniform"] = Field(
        "cluster_balanced",
        description="Order of the pruning epochs: cluster_balanced = every (class, cluster) pseudo group drawn "
        "equally often (with replacement), the paper's class-balanced de-biasing set; uniform = a permutation.",
    )
    # -- retraining -----------------------------------------------------------------------
    retrain_ep: int = Field(5, ge=0, description="Epochs of retraining the kept subnetwork (official: 5).")
    retrain_split: Literal["val", "train"] = Field(
        "val",
        description="Data of the retraining: val (the official code; class labels only) or train. With val, "
        "val-based model selection reads training data: the summary's default rule is then last.",
    )
    lr_main: float = Field(1e-2, gt=0, description="Adam learning rate of the retraining (run.py: 1e-2).")
    retrain_schedule: Literal["step", "constant"] = Field(
        "step",
        description="step: the retraining lr times lr_gamma_main every lr_decay_step_main iterations (run.py's "
        "StepLR, stepped after every iteration); constant: lr_main throughout.",
    )
    lr_decay_step_main: int = Field(
        60, ge=1, description="Iterations between the retraining lr's decays (run.py: 60; DCWP: 600)."
    )
    lr_gamma_main: float = Field(0.1, gt=0, description="Factor of each retraining lr decay (run.py: 0.1).")
    beta1: float = Field(
        0.9, ge=0, lt=1, description="Adam β1 of the retraining (DCWP's main.py: 0.9; PruSC's run.py names it only)."
    )
    beta2: float = Field(
        0.99, ge=0, lt=1, description="Adam β2 of the retraining (DCWP's main.py: 0.99; PruSC's run.py names it only)."
    )


class IRMAFEConfig(PseudoGroupConfig):
    """ERM, clustering, two environments from the clusters, IRMv1 (invariant_learning/irm.py)."""

    num_clusters: int = Field(8, ge=1, description="k of the k-means (invariant_learning/clustering.py: 8).")
    minority_env: bool = Field(
        True,
        description="Train on the minority environment: the samples whose label is not their cluster's majority "
        "label (they contradict the spurious feature the cluster stands for), plus as many majority samples.",
    )
    balance_env: bool = Field(
        True,
        description="Train on the balanced environment: every cluster's samples drawn equally often.",
    )
    irm_lr: float = Field(5e-4, gt=0, description="Adam learning rate of the IRM phase (irm.py: 5e-4).")
    l2_regularizer_weight: float = Field(1e-3, ge=0, description="Weight of Σ‖θ‖² (irm.py: 0.001).")
    penalty_weight: float = Field(9100.0, ge=0, description="λ of the IRMv1 penalty after the anneal (irm.py: 9100).")
    penalty_anneal_iters: int = Field(
        190, ge=0, description="Steps with λ = 1 before λ = penalty_weight (irm.py: 190)."
    )
    irm_batch_size: int | None = Field(
        None,
        ge=2,
        description="Batch of the IRM phase, split equally between the environments (irm.py: full batch; "
        "None: train.batch_size, which the ERM phase uses).",
    )
    irm_steps: int | None = Field(
        None, ge=1, description="Steps of the IRM phase (irm.py: 501 full-batch steps; None: train.epochs epochs)."
    )
