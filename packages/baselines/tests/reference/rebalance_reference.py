"""A compact port of facebookresearch/BalancingGroups' data balancing (``datasets.py``:
``GroupDataset.count_groups``, ``subsample_`` and ``get_loaders``' WeightedRandomSampler)."""

from __future__ import annotations

import torch


def subsample(y: list[int], g: list[int], perm: list[int], what: str) -> list[int]:
    """``subsample_``: walk ``perm``, keep while the (y, a) group (or class) is under the smallest size."""
    nb_groups, nb_labels = len(set(g)), len(set(y))
    group_sizes, class_sizes = [0] * nb_groups * nb_labels, [0] * nb_labels
    for i in range(len(y)):
        group_sizes[nb_groups * y[i] + g[i]] += 1
        class_sizes[y[i]] += 1
    min_size = min(group_sizes) if what == "groups" else min(class_sizes)
    counts_g, counts_y, new_i = [0] * nb_groups * nb_labels, [0] * nb_labels, []
    for p in perm:
        yy, gg = y[p], g[p]
        if (what == "groups" and counts_g[nb_groups * yy + gg] < min_size) or (
            what == "classes" and counts_y[yy] < min_size
        ):
            counts_g[nb_groups * yy + gg] += 1
            counts_y[yy] += 1
            new_i.append(p)
    return new_i


def weights(y: list[int], g: list[int], what: str) -> list[float]:
    """``count_groups``' ``wg`` (what = groups) or ``wy``: len / size of the sample's group or class."""
    nb_groups, nb_labels = len(set(g)), len(set(y))
    group_sizes, class_sizes = [0] * nb_groups * nb_labels, [0] * nb_labels
    for i in range(len(y)):
        group_sizes[nb_groups * y[i] + g[i]] += 1
        class_sizes[y[i]] += 1
    if what == "groups":
        return [len(y) / group_sizes[nb_groups * y[i] + g[i]] for i in range(len(y))]
    return [len(y) / class_sizes[y[i]] for i in range(len(y))]


def weighted_epoch(w: list[float], generator: torch.Generator) -> list[int]:
    """``WeightedRandomSampler(w, len(w))`` (replacement=True), one epoch."""
    sampler = torch.utils.data.WeightedRandomSampler(w, len(w), generator=generator)
    return list(sampler)
