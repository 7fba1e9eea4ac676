"""Test methods of the engine's own tests (Recorder, GroupUser, NaNAfter, TwoPhase) with the kit's tiny
dataset, registered by tests as a throwaway plugin; Crash and CrashAt come from robust.testing."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from robust import hookimpl
from robust.data import Batch
from robust.erm import ERM
from robust.method import Phase
from robust.testing import TinyConfig, load_tiny


class Recorder(ERM):
    """ERM that records what the engine hands it."""

    seen_groups: ClassVar[list[bool]] = []
    seen_indices: ClassVar[list[Tensor]] = []

    def update(self, batch: Batch, step: int):
        Recorder.seen_groups.append(batch.group is not None or batch.bias is not None)
        Recorder.seen_indices.append(batch.index.cpu())
        return super().update(batch, step)


class GroupUser(Recorder):
    uses_group_labels = True


class NaNAfter(ERM):
    """ERM whose loss turns NaN at step 5."""

    def update(self, batch: Batch, step: int):
        logs = super().update(batch, step)
        if step >= 5:
            logs["loss"] = logs["loss"] * math.nan
        return logs


class TwoPhase(ERM):
    """A train phase, a non-training phase that writes state, then a second train phase."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.register_buffer("feature_mean", torch.zeros(self.model.feature_dim))
        self.analysis_runs = 0

    def phases(self):
        return [Phase("warmup", epochs=2), Phase("analyse", run=self.analyse), Phase("finetune", epochs=2)]

    def analyse(self):
        self.analysis_runs += 1
        feats = [self.model.features(b.x) for b in self.ctx.batches("train")]
        self.feature_mean.copy_(torch.cat(feats).mean(0).detach())


class TinyPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("tiny", load_tiny, config=TinyConfig, description="tiny test data", default_model="mlp")  # the kit's

    @hookimpl
    def register_methods(self, register):
        register("recorder", Recorder)
        register("group-user", GroupUser)
        register("nan-after", NaNAfter)
        register("two-phase", TwoPhase)
