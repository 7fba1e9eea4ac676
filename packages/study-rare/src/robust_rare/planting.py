"""Planting a pattern into a few training images of one class, on any registered image dataset.

The dataset transform ``plant`` (``--set dataset.pattern=v8 --set dataset.n_spurious=3 --set
dataset.target=0 --set dataset.pattern_seed=0``, or the reference's dataset name
``mnistv8-3-0-0`` = ``{dataset}{pattern}-{n}-{target}-{seed}``). As the reference's
``spurious_ml/datasets``: ``n`` training images are drawn uniformly without replacement among those
of class ``target`` with ``RandomState(seed)``; the pattern (random patterns from the same seed)
is applied to them; labels do not change (they are already of the target class); val and test are
untouched. The chosen indices go to ``info.extra["planted"]`` with the pattern, so that analyses
(the spurious score, removal, membership inference) know which examples are spurious.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from robust.api import ArraySplit, ConfigError, DatasetBundle, StreamSplit, subset_split
from robust_rare.patterns import Pattern, canonical


class PlantOptions(BaseModel):
    """The options every dataset takes once robust-rare is installed."""

    model_config = ConfigDict(extra="forbid")

    pattern: str | None = Field(
        None, description="Spurious pattern to plant: v1/v3/v8 (s1-s3), v18/v19/v20 (r1-r3) or v30 (core)."
    )
    n_spurious: int = Field(0, ge=0, description="Training images of class `target` that get the pattern.")
    target: int = Field(0, ge=0, description="The class whose images get the pattern.")
    pattern_seed: int = Field(0, ge=0, description="Seed of the choice of images and of a random pattern.")
    drop_planted: bool = Field(
        False,
        description="Remove the images that would get the pattern from training (the study's removal experiments: "
        "the same data minus its spurious examples).",
    )


def spurious_indices(labels: Tensor, n: int, target: int, seed: int) -> Tensor:
    """The ``n`` training indices of class ``target`` that get the pattern (RandomState(seed).choice)."""
    candidates = np.flatnonzero(labels.numpy() == target)
    if n > len(candidates):
        raise ConfigError(
            f"Cannot plant the pattern into {n} images of class {target}: the training split has only "
            f"{len(candidates)}. Lower n_spurious, or pick another target class."
        )
    chosen = np.random.RandomState(seed).choice(candidates, n, replace=False) if n else np.empty(0, dtype=np.int64)
    return torch.from_numpy(np.sort(chosen).astype(np.int64))


class PlantedSplit(StreamSplit):
    """A streamed split whose samples at ``index`` are read with ``pattern`` applied."""

    def __init__(self, base: StreamSplit, index: Tensor, pattern: Pattern) -> None:
        self.base, self.pattern = base, pattern
        self.chosen = frozenset(index.tolist())
        self.labels, self.groups, self.bias, self.bboxes = base.labels, base.groups, base.bias, base.bboxes
        self.preferred_workers = base.preferred_workers

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        image, mask = self.base.read(index)
        if index in self.chosen:
            image = self.pattern(image.unsqueeze(0)).squeeze(0)
        return image, mask


def plant(bundle: DatasetBundle, options: PlantOptions) -> DatasetBundle:
    """The bundle with ``options.pattern`` planted into ``n_spurious`` training images of ``target``."""
    if options.pattern is None:
        if options.n_spurious:
            raise ConfigError("n_spurious is set but no pattern: add --set dataset.pattern=v8 (or another pattern).")
        return bundle
    code = canonical(options.pattern)
    if not 0 <= options.target < bundle.info.num_classes:
        raise ConfigError(
            f"target must be a class of dataset {bundle.info.name!r} (0 to {bundle.info.num_classes - 1}), "
            f"not {options.target}."
        )
    train = bundle.splits["train"]
    index = spurious_indices(train.labels, options.n_spurious, options.target, options.pattern_seed)
    pattern = Pattern(code, options.pattern_seed)
    record = {"pattern": code, "n": options.n_spurious, "target": options.target, "seed": options.pattern_seed}
    if options.drop_planted:
        kept = torch.ones(len(train), dtype=torch.bool)
        kept[index] = False
        extra = {**bundle.info.extra, "planted": {**record, "index": [], "dropped": index.tolist()}}
        splits = {**bundle.splits, "train": subset_split(train, kept.nonzero().flatten())}
        return dataclasses.replace(bundle, info=dataclasses.replace(bundle.info, extra=extra), splits=splits)
    if isinstance(train, ArraySplit):
        images = train.images.clone()
        if len(index):
            images[index] = pattern(images[index])
        planted: Any = dataclasses.replace(train, images=images)
    elif isinstance(train, StreamSplit):
        planted = PlantedSplit(train, index, pattern)
    else:  # pragma: no cover - every split is one of the two
        raise ConfigError(f"Cannot plant a pattern into a {type(train).__name__} split.")
    extra = {**bundle.info.extra, "planted": {**record, "index": index.tolist()}}
    info = dataclasses.replace(bundle.info, extra=extra)
    return dataclasses.replace(bundle, info=info, splits={**bundle.splits, "train": planted})
