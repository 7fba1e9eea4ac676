"""What LfF and DisEnt share as methods: two networks trained side by side with Adam, a biased
one (GCE) and a debiased one (CE weighted by the relative difficulty), on full batches."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from robust.api import Method, MethodContext, Phase
from robust_disent.config import RelativeDifficultyConfig
from robust_disent.losses import GCE_FORMS, RelativeDifficulty
from robust_disent.presets import DATASET_PRESETS


class RelativeDifficultyMethod(Method):
    """Base of ``lff`` and ``disent``: the loss memories, GCE, and one Adam per network."""

    config: RelativeDifficultyConfig
    dataset_presets: ClassVar[dict[str, str]] = DATASET_PRESETS

    def __init__(self, config: RelativeDifficultyConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.difficulty = RelativeDifficulty(ctx.data.splits["train"].labels, ctx.num_classes, config.ema_alpha)
        self.gce = functools.partial(GCE_FORMS[config.gce_form], q=config.q)

    @classmethod
    def default_amp(cls, config: RelativeDifficultyConfig) -> str | None:
        """fp32 unless ``train.amp`` is set: the papers' numbers come from released code that trains in fp32."""
        return "off"

    def add_adam(self, name: str, network: nn.Module, scheduler: Any = None) -> torch.optim.Optimizer:
        """Adam (the references' optimiser) at the configured lr and weight decay, for one network.

        ``scheduler(optimizer)`` may build a per-step LR schedule for it.
        """
        optimizer = torch.optim.Adam(network.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        return self.add_optimizer(name, optimizer, scheduler(optimizer) if scheduler else None, interval="step")

    def phases(self) -> list[Phase]:
        return [Phase("train", drop_last=True)]  # the references' train loader drops the last batch
