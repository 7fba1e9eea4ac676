"""IRM with annotation-free environments (Le, Seifert, Schlötterer, UniReps 2024): IRMv1 (Arjovsky
et al.) on environments built from the clusters of an ERM model's representations
(:mod:`robust_prusc.environments`), not from annotations. Reference: aix-group/prusc
``invariant_learning/irm.py``.

Phases: ``erm`` (or ``load`` with ``--from``) and ``cluster`` as PruSC's, then ``irm``: a fresh
classifier trained on batches that hold an equal share of each environment, with

    L = mean_e R_e + l2 · Σ‖θ‖² + λ(t) · mean_e ‖∇_w R_e(w · f)|_{w=1}‖²,
    λ(t) = 1 for t < penalty_anneal_iters, else penalty_weight, and L / λ when λ > 1

(the reference's schedule and rescaling).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robust.api import Batch, ConfigError, MethodContext, Phase
from robust_prusc.config import IRMAFEConfig
from robust_prusc.environments import balanced_weights, minority_environment
from robust_prusc.presets import IRM_AFE_DATASET_PRESETS, IRM_AFE_PRESETS
from robust_prusc.pseudo_groups import PseudoGroupMethod


class IRMAFE(PseudoGroupMethod):
    """ERM → clusters → minority and balanced environments → IRMv1."""

    Config = IRMAFEConfig
    config: IRMAFEConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = IRM_AFE_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = IRM_AFE_DATASET_PRESETS

    def __init__(self, config: IRMAFEConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        if not (config.minority_env or config.balance_env):
            raise ConfigError(
                "irm-afe needs at least one environment: set minority_env=true or balance_env=true (both: the paper)."
            )
        self.num_envs = int(config.minority_env) + int(config.balance_env)
        per_env = max(1, (config.irm_batch_size or ctx.config.train.batch_size) // self.num_envs)
        self.env_batch = per_env

    def phases(self) -> list[Phase]:
        c = self.config
        irm = Phase(
            "irm",
            steps=c.irm_steps,
            update=self.irm_step,
            on_start=self.start_irm,
            batch_size=self.env_batch * self.num_envs,
            optimizers=("irm",),
            epoch_indices=self.environment_batches,
        )
        return [*self.first_phases(), irm]

    def start_irm(self) -> None:
        """A fresh classifier (the ERM model served the clustering only) and its Adam."""
        self.model = self.ctx.build_model()
        self.add_optimizer("irm", torch.optim.Adam(self.model.parameters(), lr=self.config.irm_lr))

    def environment_batches(self, epoch: int, generator: torch.Generator) -> Tensor:
        """Each batch: ``env_batch`` samples of every environment, in environment order."""
        labels = self.ctx.data.splits["train"].labels
        clusters = self.clusters.cpu()
        pools: list[tuple[Tensor, Tensor | None]] = []
        if self.config.minority_env:
            pools.append((minority_environment(labels, clusters, generator), None))
        if self.config.balance_env:
            pools.append((torch.arange(len(labels)), balanced_weights(clusters)))
        batches = -(-len(labels) // (self.env_batch * self.num_envs))
        draws = []
        for pool, weights in pools:
            if len(pool) == 0:
                raise ConfigError(
                    "The minority environment is empty: every sample carries its cluster's majority label. Use "
                    "more clusters (--set num_clusters=...), per-class clustering, or balance_env only."
                )
            w = torch.ones(len(pool), dtype=torch.double) if weights is None else weights
            picks = torch.multinomial(w, batches * self.env_batch, replacement=True, generator=generator)
            draws.append(pool[picks].view(batches, self.env_batch))
        return torch.cat(draws, dim=1).flatten()

    def irm_step(self, batch: Batch, step: int) -> dict[str, Any]:
        c = self.config
        risks, penalties = [], []
        # Each environment forwarded on its own, as the reference does (BatchNorm statistics per environment).
        for x, y in zip(batch.x.split(self.env_batch), batch.y.split(self.env_batch), strict=True):
            z = self.model(x)
            risks.append(self.loss(z, y).mean())
            penalties.append(self.irm_penalty(z, y))
        risk, penalty = torch.stack(risks).mean(), torch.stack(penalties).mean()
        l2 = torch.stack([p.pow(2).sum() for p in self.model.parameters()]).sum()
        weight = c.penalty_weight if step >= c.penalty_anneal_iters else 1.0
        loss = risk + c.l2_regularizer_weight * l2 + weight * penalty
        if weight > 1.0:
            loss = loss / weight  # keeps the gradients in range, as the reference
        self.optimize(loss, "irm")
        return {"loss": loss.detach(), "risk": risk.detach(), "penalty": penalty.detach()}

    def irm_penalty(self, logits: Tensor, y: Tensor) -> Tensor:
        """IRMv1: the squared gradient of the risk with respect to a dummy scale ``w = 1`` on the logits."""
        scale = torch.ones((), device=logits.device, requires_grad=True)
        (grad,) = torch.autograd.grad(self.loss(logits * scale, y).mean(), scale, create_graph=True)
        return grad.pow(2)
