"""A tiny in-memory dataset and test methods, registered by tests as throwaway plugins."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from robust import hookimpl
from robust.config import DatasetConfig
from robust.data import ArraySplit, Batch, DatasetBundle, DatasetInfo
from robust.erm import ERM
from robust.method import Phase


class TinyConfig(DatasetConfig):
    n_train: int = 96
    spurious: float = 0.9


def _split(n: int, spurious: float, seed: int) -> ArraySplit:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    agree = torch.rand(n, generator=gen) < spurious
    bias = torch.where(agree, y, 1 - y)
    images = torch.randint(0, 60, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    images[:, 0, :4] += (y * 120).to(torch.uint8)[:, None, None]  # the core feature: top half, red
    images[:, 2] += (bias * 100).to(torch.uint8)[:, None, None]  # the spurious one: all of blue
    masks = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    masks[:, :, :4] = 255
    bboxes = torch.tensor([[0, 0, 8, 4]] * n)
    return ArraySplit(labels=y, groups=2 * y + bias, bias=bias, bboxes=bboxes, images=images, masks=masks)


def load_tiny(config: TinyConfig, data_root) -> DatasetBundle:
    info = DatasetInfo(
        name="tiny",
        num_classes=2,
        input_shape=(3, 8, 8),
        class_names=["a", "b"],
        group_names=["a_0", "a_1", "b_0", "b_1"],
        bias_names=["0", "1"],
        train_augment="crop_flip",
    )
    splits = {
        "train": _split(config.n_train, config.spurious, 0),
        "val": _split(40, 0.5, 1),
        "test": _split(40, 0.5, 2),
    }
    return DatasetBundle(info, splits)


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
        register("tiny", load_tiny, config=TinyConfig, description="tiny test data", default_model="mlp")

    @hookimpl
    def register_methods(self, register):
        register("recorder", Recorder)
        register("group-user", GroupUser)
        register("nan-after", NaNAfter)
        register("two-phase", TwoPhase)


class Crash(Exception):
    """Raised by :class:`CrashAt`."""


class CrashAt:
    """A lifecycle plugin that kills the run at a chosen evaluation (as a SIGKILL would, mid-run)."""

    def __init__(self, evaluation: int) -> None:
        self.evaluation = evaluation
        self.seen = 0

    @hookimpl
    def on_evaluation(self, run, record):
        self.seen += 1
        if self.seen == self.evaluation:
            raise Crash
