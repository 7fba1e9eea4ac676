"""The record every dataset yields, and the containers datasets hand to the engine.

A dataset factory returns a :class:`DatasetBundle`: metadata (:class:`DatasetInfo`) plus
named splits. ``train`` is trained on, ``val`` drives model selection, and every other split
(``test``, ``test_flipped``, ...) is evaluated and reported under its own name.

Splits hold their labels, groups and bias attributes as tensors up front, so metrics and
samplers never decode an image. Images are uint8 ``(N, C, H, W)``; the loader turns them into
normalised floats on the device, batch by batch (:mod:`robust.loader`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from robust.errors import DataError


@dataclass
class Batch:
    """One mini-batch, on the device.

    ``index`` is the position of each sample in its split, so that methods can keep
    per-sample state (LfF's loss EMA, CLP's characteristics). ``group`` and ``bias`` are None
    when the run's protocol withholds them from the method. ``mask`` is the foreground mask in
    [0, 1], shape ``(N, 1, H, W)``; ``bbox`` is ``(N, 4)`` as ``x0, y0, x1, y1`` (end exclusive).
    """

    x: Tensor
    y: Tensor
    index: Tensor
    group: Tensor | None = None
    bias: Tensor | None = None
    mask: Tensor | None = None
    bbox: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def replace(self, **changes: Any) -> Batch:
        return replace(self, **changes)


@dataclass
class Split:
    """What every split has without decoding images: one label (and maybe group, bias) per sample."""

    labels: Tensor
    groups: Tensor | None = None
    bias: Tensor | None = None
    bboxes: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _check_metadata(self, name: str) -> None:
        n = len(self)
        if self.labels.dtype != torch.long or self.labels.ndim != 1:
            raise DataError(
                f"Split {name!r}: labels must be a 1-D int64 tensor, got {self.labels.dtype} {tuple(self.labels.shape)}."
            )
        for attr in ("groups", "bias"):
            value = getattr(self, attr)
            if value is not None and (value.shape != (n,) or value.dtype != torch.long):
                raise DataError(
                    f"Split {name!r}: {attr} must be int64 of shape ({n},), got {value.dtype} {tuple(value.shape)}."
                )
        if self.bboxes is not None and self.bboxes.shape != (n, 4):
            raise DataError(f"Split {name!r}: bboxes must have shape ({n}, 4), got {tuple(self.bboxes.shape)}.")


@dataclass
class ArraySplit(Split):
    """A split held in memory as tensors: images uint8 ``(N, C, H, W)``, masks uint8 ``(N, 1, H, W)``."""

    images: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    masks: Tensor | None = None

    def validate(self, name: str) -> None:
        self._check_metadata(name)
        n = len(self)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[0] != n:
            raise DataError(
                f"Split {name!r}: images must be uint8 (N, C, H, W) with N = {n} labels, got "
                f"{self.images.dtype} {tuple(self.images.shape)}."
            )
        if self.masks is not None and self.masks.shape != (n, 1, *self.images.shape[2:]):
            raise DataError(
                f"Split {name!r}: masks must be uint8 (N, 1, H, W) matching the images, got {tuple(self.masks.shape)}."
            )

    def subset(self, indices: Tensor | Sequence[int]) -> ArraySplit:
        """The samples at ``indices`` (a new split; indices are renumbered from 0)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ArraySplit(**{k: (v[idx] if isinstance(v, Tensor) else v) for k, v in values.items()})

    def to(self, device: torch.device | str) -> ArraySplit:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ArraySplit(**{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in values.items()})

    @property
    def nbytes(self) -> int:
        total = self.images.numel() * self.images.element_size()
        if self.masks is not None:
            total += self.masks.numel()
        return total


class StreamSplit(Split):
    """A split too large for memory: images are read one at a time by :meth:`read`.

    Subclasses implement ``read(i) -> (image uint8 (C, H, W), mask uint8 (1, H, W) or None)``
    and must be picklable (DataLoader workers). Labels, groups and bias stay tensors.
    """

    #: Set to cap DataLoader workers for this split (0: read in the main process, e.g. an HDF5 cache).
    preferred_workers: int | None = None

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:  # pragma: no cover - interface
        raise NotImplementedError

    def validate(self, name: str) -> None:
        self._check_metadata(name)


class SubsetSplit(StreamSplit):
    """A view of some samples of a streamed split: ``read(i)`` reads ``base.read(indices[i])``."""

    def __init__(self, base: StreamSplit, indices: Tensor) -> None:
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices]
        self.groups = base.groups[indices] if base.groups is not None else None
        self.bias = base.bias[indices] if base.bias is not None else None
        self.bboxes = base.bboxes[indices] if base.bboxes is not None else None
        self.preferred_workers = base.preferred_workers

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        return self.base.read(int(self.indices[index]))


def with_labels(split: Split, labels: Tensor) -> Split:
    """The same split with other labels (label noise); groups and bias are kept."""
    if isinstance(split, ArraySplit):
        return replace(split, labels=labels)
    view = subset_split(split, torch.arange(len(split)))
    view.labels = labels
    return view


def with_groups(split: Split, groups: Tensor, bias: Tensor) -> Split:
    """The same split with other group and bias labels (inferred groups); labels are kept."""
    if isinstance(split, ArraySplit):
        return replace(split, groups=groups, bias=bias)
    view = subset_split(split, torch.arange(len(split)))
    view.groups, view.bias = groups, bias
    return view


def subset_split(split: Split, indices: Tensor | Sequence[int]) -> Split:
    """The samples at ``indices`` of any split (in memory: a copy; streamed: a view)."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(split, ArraySplit):
        return split.subset(idx)
    if isinstance(split, StreamSplit):
        return SubsetSplit(split, idx)
    raise TypeError(f"cannot take a subset of a {type(split).__name__}")


@dataclass
class DatasetInfo:
    """Metadata the engine, metrics and methods need.

    ``group_names[g]`` names group ``g``; ``bias_names[b]`` names the value ``b`` of the bias
    (spurious) attribute. ``train_group_counts`` weights ``train_weighted_acc``.
    ``train_augment`` is the batch augmentation the dataset's papers use for training:
    ``none``, ``flip`` or ``crop_flip`` (pad-and-crop plus horizontal flip), applied on the device;
    ``crop_padding`` is the pad of ``crop_flip`` in pixels (None: an eighth of the image side).
    ``test_metric`` is the test metric the dataset's papers report (``avg_acc``; BFFHQ's papers
    report ``conflicting_acc``): the ``oracle_test`` selection rule maximises it.
    ``auc``: also compute the macro one-vs-rest AUC of every eval split (CCT selects models by it).
    ``derived_metrics``: metrics computed from others after each evaluation, ``{name: [a, b, ...]}``
    = a - b - ... (IN-9's ``bg_gap``: ``test_mixed_same/avg_acc - test_mixed_rand/avg_acc``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    group_names: list[str]
    bias_names: list[str] | None = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    train_group_counts: list[int] = field(default_factory=list)
    train_augment: str = "none"
    crop_padding: int | None = None
    test_metric: str = "avg_acc"
    auc: bool = False
    derived_metrics: dict[str, list[str]] = field(default_factory=dict)
    has_masks: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def group_count(self, groups: Tensor | None, split: str | None = None) -> int:
        """How many groups a split's labels ``groups`` range over: the dataset's annotated count, or for
        groups inferred from a file (``dataset.groups``; label x cluster ids of their own, on ``split``
        or, with None, on any split) the largest id + 1."""
        inferred = self.extra.get("inferred_groups")
        if groups is not None and inferred is not None and (split is None or split in inferred.get("splits", [])):
            return int(groups.max()) + 1
        return self.num_groups


@dataclass
class DatasetBundle:
    """A dataset's metadata and splits (``train``, ``val``, ``test`` and any extra test sets).

    ``aux`` holds splits that are not evaluated, such as the small clean meta set that
    meta-learning methods (CLP, Meta-Weight-Net) draw from; methods reach them as
    ``ctx.data.aux["meta"]``.
    """

    info: DatasetInfo
    splits: dict[str, Split]
    aux: dict[str, Split] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in ("train", "val", "test") if s not in self.splits]
        if missing:
            raise DataError(
                f"Dataset {self.info.name!r} has no {', '.join(missing)} split; every dataset needs train, val and test."
            )
        for name, split in {**self.splits, **self.aux}.items():
            split.validate(name)  # type: ignore[attr-defined]
        train = self.splits["train"]
        if not self.info.train_group_counts and train.groups is not None:
            counts = torch.bincount(train.groups, minlength=self.info.num_groups)
            self.info.train_group_counts = counts.tolist()
        self.info.has_masks = self.info.has_masks or getattr(train, "masks", None) is not None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def eval_split_names(self) -> list[str]:
        """Splits evaluated after training epochs: val first, then test, then the rest."""
        rest = [s for s in self.splits if s not in ("train", "val", "test")]
        return ["val", "test", *rest]


def replace_splits(
    bundle: DatasetBundle,
    splits: dict[str, Split] | None = None,
    aux: dict[str, Split] | None = None,
    *,
    transform_options: dict[str, Any] | None = None,
    recount: bool = True,
    **info_changes: Any,
) -> DatasetBundle:
    """A new bundle with ``splits`` / ``aux`` replaced (what a dataset transform returns).

    ``train_group_counts`` follows the new training split (``recount=False``: stays, for a transform that
    replaces the groups but not the samples); ``transform_options`` are merged into
    ``info.extra["dataset_transforms"]`` (the record of the transforms' options, in summary.json)."""
    import dataclasses

    splits = dict(bundle.splits if splits is None else splits)
    counts = bundle.info.train_group_counts
    train = splits["train"]
    if recount and train.groups is not None and counts:
        counts = torch.bincount(train.groups, minlength=len(counts)).tolist()
    extra = dict(bundle.info.extra)
    if transform_options:
        extra["dataset_transforms"] = {**extra.get("dataset_transforms", {}), **transform_options}
    extra.update(info_changes.pop("extra", {}))
    info = dataclasses.replace(bundle.info, train_group_counts=counts, extra=extra, **info_changes)
    return dataclasses.replace(bundle, info=info, splits=splits, aux=dict(bundle.aux if aux is None else aux))
