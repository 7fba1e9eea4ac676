"""PruSC (Le, Schlötterer, Seifert, TMLR): a spurious-free subnetwork of an ERM model, found by
pruning without group labels. Official code aix-group/prusc, a fork of DCWP (geonyeong-park/DCWP)
whose committed version has gaps (see the README's decisions).

Phases, each resumable (``robust run prusc``; ``--rerun PHASE`` reruns one and those after it):

1. ``erm``: plain ERM (or ``load``: the model of another run, ``--from RUN_DIR``);
2. ``cluster``: k-means (cosine) on its penultimate representations: pseudo spurious groups
   (:mod:`robust_prusc.pseudo_groups`), written to ``clusters.csv``;
3. ``prune``: the weights frozen, a logit per weight learned (:mod:`robust_prusc.masks`) with

       L = CE(f_{θ ⊙ m}(x), y) + λ_con · L_con(clusters) + λ_sparse · Σ π,

   ``m`` a fresh straight-through Gumbel-sigmoid sample each step and ``L_con`` the
   cluster-contrastive loss (:mod:`robust_prusc.contrastive`), on batches drawn evenly over the
   (class, cluster) pseudo groups; ``sparsity.json`` reports the kept weights per layer;
4. ``retrain``: the mask fixed (``π ≥ 0``), the kept weights retrained with CE from their ERM
   values, on the validation split (the official code) or the training split; Adam 1e-2, the lr
   ×0.1 every 60 iterations (run.py's defaults).

Model selection reads the ``retrain`` phase only: the ERM model is not PruSC's result.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from rich.table import Table
from torch import Tensor

from robust.api import Batch, MethodContext, Phase, atomic_write_json
from robust_prusc.config import PruSCConfig
from robust_prusc.contrastive import cluster_contrastive_loss
from robust_prusc.masks import WeightMasks
from robust_prusc.presets import DATASET_PRESETS, PRUSC_PRESETS
from robust_prusc.pseudo_groups import PseudoGroupMethod


def features_and_logits(model: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    h = model.features(x)
    return h, model.head(h)


class PruSC(PseudoGroupMethod):
    """ERM → clusters → learned weight masks (contrastive + sparsity) → the subnetwork retrained."""

    Config = PruSCConfig
    config: PruSCConfig

    presets: ClassVar[dict[str, dict[str, Any]]] = PRUSC_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = DATASET_PRESETS

    def __init__(self, config: PruSCConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.masks: WeightMasks | None = None

    def phases(self) -> list[Phase]:
        c = self.config
        return [
            *self.first_phases(),
            Phase(
                "prune",
                epochs=c.pruning_ep,
                update=self.prune_step,
                on_start=self.start_pruning,
                select=False,
                optimizers=("mask",),
                epoch_indices=self.pruning_order,
                on_epoch_end=self.report_sparsity,
                predict=self.predict_pruned,
            ),
            Phase(
                "retrain",
                epochs=c.retrain_ep,
                split=c.retrain_split,
                update=self.retrain_step,
                on_start=self.start_retraining,
                optimizers=("retrain",),
            ),
        ]

    # -- phase prune ----------------------------------------------------------------------

    def start_pruning(self) -> None:
        """Freeze the weights; one mask logit per weight, trained alone by Adam."""
        self.model.requires_grad_(False)
        self.masks = WeightMasks(self.model, self.config.mask_init).to(self.ctx.device)
        self.add_optimizer("mask", torch.optim.Adam(self.masks.parameters(), lr=self.config.lr_prune))

    def pruning_order(self, epoch: int, generator: torch.Generator) -> Tensor | None:
        """Pruning epochs draw every (class, cluster) pseudo group equally often."""
        if self.config.prune_sampling == "uniform":
            return None
        groups = self.pseudo_groups().cpu()
        weights = 1.0 / torch.bincount(groups).double()[groups]
        return torch.multinomial(weights, len(groups), replacement=True, generator=generator)

    def prune_step(self, batch: Batch, step: int) -> dict[str, Any]:
        c = self.config
        assert self.masks is not None
        sample = self.masks.sampled(c.gumbel_tau, c.mask_sample)
        h, z = self.masks.masked_call(self.model, sample, features_and_logits)(batch.x)
        ce = self.loss(z, batch.y).mean()
        con = cluster_contrastive_loss(h, batch.y, self.clusters[batch.index], c.temperature)
        sparse = self.masks.sparsity_penalty()
        loss = ce + c.lambda_con_prune * con + c.lambda_sparse * sparse
        self.optimize(loss, "mask")
        # "kept" is what sparsity.json and the final table report: the fixed mask (π ≥ 0) that retraining
        # keeps, not this step's Gumbel sample (which keeps each weight with probability sigmoid(π):
        # about 0.82 of them at the initial π = 1.5, although the fixed mask then keeps them all).
        return {"loss": loss.detach(), "ce": ce.detach(), "con": con.detach(), "kept": self.masks.kept_fraction()}

    def report_sparsity(self, epoch: int) -> None:
        """The subnetwork as it stands after each pruning epoch: sparsity.json (the last one is final)."""
        self.write_sparsity_report(log=epoch + 1 == self.config.pruning_ep)

    # -- phase retrain --------------------------------------------------------------------

    def start_retraining(self) -> None:
        """Fix the mask, prune the weights for good, train the kept weights from their ERM values with
        the official optimiser: Adam (lr_main, β1, β2, no weight decay), the lr decayed per iteration."""
        c = self.config
        assert self.masks is not None
        self.masks.requires_grad_(False)
        self.reapply_mask()
        self.model.requires_grad_(True)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr_main, betas=(c.beta1, c.beta2))
        schedule = (
            torch.optim.lr_scheduler.StepLR(optimizer, step_size=c.lr_decay_step_main, gamma=c.lr_gamma_main)
            if c.retrain_schedule == "step"
            else None
        )
        self.add_optimizer("retrain", optimizer, schedule, interval="step")

    def retrain_step(self, batch: Batch, step: int) -> dict[str, Any]:
        loss = self.loss(self.model(batch.x), batch.y).mean()
        self.optimize(loss, "retrain")
        self.reapply_mask()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def reapply_mask(self) -> None:
        """Pruned weights stay zero (Adam's and weight decay's updates of a zero-gradient weight are undone)."""
        assert self.masks is not None
        params = dict(self.model.named_parameters())
        for name, mask in self.masks.fixed().items():  # from the logits: correct after a resume too
            params[name].mul_(mask)

    def write_sparsity_report(self, log: bool = True) -> None:
        assert self.masks is not None
        report = self.masks.report()
        atomic_write_json(self.ctx.run_dir / "sparsity.json", report)
        if not log:
            return
        table = Table(title="PruSC subnetwork: weights kept per layer (the fixed mask, π ≥ 0; sparsity = 1 − kept)")
        for col in ("layer", "weights", "kept", "kept fraction"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for name, row in report.items():
            fraction = 1 - row["sparsity"]
            table.add_row(name, f"{int(row['weights']):,}", f"{int(row['kept']):,}", f"{fraction:.4f}")
        self.ctx.log(table)

    # -- evaluation -----------------------------------------------------------------------

    def predict(self, x: Tensor) -> Tensor:
        """The ERM model, then the retrained subnetwork (its pruned weights are zero)."""
        return self.model(x)

    def predict_pruned(self, x: Tensor) -> Tensor:
        """While pruning: the subnetwork of the fixed (thresholded) mask."""
        assert self.masks is not None
        return self.masks.masked_call(self.model, self.masks.fixed())(x)
