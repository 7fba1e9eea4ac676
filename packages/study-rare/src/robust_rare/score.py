"""The spurious score: how much a planted pattern alone moves a model toward its target class.

As the reference computes it (``notebooks/rare_spurious_correlation.ipynb``): every clean test
image ``x`` and the same image with the pattern, ``x'`` (random patterns drawn from the training
seed, so it is the planted one); the score is the fraction of test images whose target-class
probability rises by more than ``τ`` = 0.1:

    score = mean_x 1[ p_c(x') − p_c(x) > τ ].

A model that never saw the pattern scores about 0; the study compares against such a model (its
"0 examples" baseline). The notebook's CIFAR-10 cell counts only the test images of the other
classes: ``spurious_score_others``. Also reported: clean test accuracy, and accuracy on patterned
test images of the other classes (how much the pattern hurts them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from robust.api import ArraySplit, BatchLoader, ConfigError, DatasetInfo, Split, StreamSplit
from robust_rare.patterns import Pattern, canonical
from robust_rare.planting import PlantedSplit

THRESHOLD = 0.1


def patterned(split: Split, pattern: Pattern) -> Split:
    """``split`` with the pattern on every image."""
    if isinstance(split, ArraySplit):
        return dataclasses.replace(split, images=pattern(split.images))
    assert isinstance(split, StreamSplit)
    return PlantedSplit(split, torch.arange(len(split)), pattern)


@torch.no_grad()
def logits(model: torch.nn.Module, split: Split, info: DatasetInfo, device: torch.device) -> Tensor:
    """Logits of ``model`` on every image of ``split``, in order, normalised as training was."""
    loader = BatchLoader(split, info, device, batch_size=512, data_on_device="no", num_workers=0)
    model.eval()
    return torch.cat([model(batch.x).float() for batch in loader.batches(loader.sequential())])


def probabilities(model: torch.nn.Module, split: Split, info: DatasetInfo, device: torch.device) -> Tensor:
    """Softmax of :func:`logits`."""
    return logits(model, split, info, device).softmax(dim=1)


def spurious_score(
    model: torch.nn.Module,
    split: Split,
    info: DatasetInfo,
    pattern: str,
    target: int,
    seed: int = 0,
    *,
    threshold: float = THRESHOLD,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The score of ``model`` for ``pattern`` (seed ``seed``) and class ``target`` on ``split``."""
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < info.num_classes:
        # A negative index would silently score the last class (-1 is class 9 on CIFAR-10).
        raise ConfigError(
            f"The target class must be a class index of dataset {info.name!r}: 0 to {info.num_classes - 1}, not "
            f"{target!r}. Pass --target CLASS with one of them (or leave it out to score the planted class)."
        )
    device = torch.device(device)
    code = canonical(pattern)
    clean = probabilities(model, split, info, device)
    moved = probabilities(model, patterned(split, Pattern(code, seed)), info, device)
    labels = split.labels.to(device)
    rise = moved[:, target] - clean[:, target]
    others = labels != target
    return {
        "pattern": code,
        "target": target,
        "seed": seed,
        "threshold": threshold,
        "spurious_score": float((rise > threshold).float().mean()),
        "spurious_score_others": float((rise[others] > threshold).float().mean()) if others.any() else None,
        "mean_rise": float(rise.mean()),
        "clean_acc": float((clean.argmax(1) == labels).float().mean()),
        "patterned_other_acc": float((moved.argmax(1)[others] == labels[others]).float().mean())
        if others.any()
        else None,
        "test_images": len(labels),
    }
