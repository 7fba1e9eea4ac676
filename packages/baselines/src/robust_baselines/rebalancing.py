"""Data balancing (Idrissi et al. 2022, facebookresearch/BalancingGroups; SubpopBench's names):
plain ERM on a training set balanced over groups (SUBG, RWG: group labels) or classes (SUBY, RWY:
none). Ported from BalancingGroups ``datasets.py``: ``GroupDataset.subsample_`` (a random permutation
walked once, keeping a sample while its group has fewer than the smallest group's count; drawn once,
before training) and ``count_groups`` with ``get_loaders`` (a ``WeightedRandomSampler`` with weights
n / n_g, as many draws as samples, with replacement).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from robust.api import ERM, ConfigError, MethodContext
from robust_baselines.config import RebalanceConfig
from robust_baselines.presets import REBALANCE_DATASET_PRESETS, REBALANCE_PRESETS


def subsample(keys: Tensor, perm: Tensor) -> Tensor:
    """Indices kept by walking ``perm`` and keeping a sample while its key (group or class) has fewer
    kept than the smallest key's count: every present key ends with that count. In ``perm`` order."""
    counts = torch.bincount(keys)
    smallest = int(counts[counts > 0].min())
    kept = torch.zeros_like(counts)
    chosen = []
    for i in perm.tolist():
        k = int(keys[i])
        if kept[k] < smallest:
            kept[k] += 1
            chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


def balancing_weights(keys: Tensor) -> Tensor:
    """n / n_key of every sample (BalancingGroups' ``wg``/``wy``), in float64 as the sampler takes them."""
    counts = torch.bincount(keys).double()
    return len(keys) / counts[keys]


class Rebalanced(ERM):
    """ERM whose epochs are drawn from a balanced training set; subclasses say by what and how."""

    Config = RebalanceConfig
    config: RebalanceConfig
    by: ClassVar[Literal["group", "class"]] = "class"
    how: ClassVar[Literal["subsample", "reweight"]] = "subsample"
    presets: ClassVar[dict[str, dict[str, Any]]] = REBALANCE_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = REBALANCE_DATASET_PRESETS

    def __init__(self, config: RebalanceConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.keys = self.balance_keys(ctx)
        if self.how == "subsample":
            seed = ctx.config.seed if config.subsample_seed is None else config.subsample_seed
            perm = torch.randperm(len(self.keys), generator=torch.Generator().manual_seed(seed))
            self.subset = subsample(self.keys, perm)
            sizes = torch.bincount(self.keys[self.subset]).tolist()
            ctx.log(
                f"Subsampled the training set to {len(self.subset)} of {len(self.keys)} samples ({sizes} per {self.by})."
            )
        else:
            self.weights = balancing_weights(self.keys)

    def balance_keys(self, ctx: MethodContext) -> Tensor:
        train = ctx.data.splits["train"]
        if self.by == "class":
            return train.labels.cpu().long()
        if train.groups is None:
            name = type(self).__name__
            raise ConfigError(
                f"{name} balances the training groups, and dataset {ctx.info.name!r} has no group labels on its "
                "training split. Use its class-only variant (suby or rwy, no group labels), or give it inferred "
                "groups: `robust discover --from RUN_DIR --out groups.csv`, then --set dataset.groups=groups.csv."
            )
        return train.groups.cpu().long()

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        if self.how == "subsample":  # DataLoader(shuffle=True) over the fixed subset
            return self.subset[torch.randperm(len(self.subset), generator=generator)]
        # WeightedRandomSampler(weights, len(weights)): replacement=True.
        return torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)


class SubsampleGroups(Rebalanced):
    """SUBG: every group subsampled to the smallest group's size."""

    uses_group_labels: ClassVar[bool] = True
    by = "group"
    how = "subsample"


class ReweightGroups(Rebalanced):
    """RWG: batches drawn with probability ∝ 1/n_g."""

    uses_group_labels: ClassVar[bool] = True
    by = "group"
    how = "reweight"


class SubsampleClasses(Rebalanced):
    """SUBY: every class subsampled to the smallest class's size."""

    by = "class"
    how = "subsample"


class ReweightClasses(Rebalanced):
    """RWY: batches drawn with probability ∝ 1/n_y."""

    by = "class"
    how = "reweight"
