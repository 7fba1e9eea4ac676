"""Evaluation metrics, one definition per name, so that numbers from different papers compare.

Papers reuse names for different quantities; every key here has exactly one meaning:

==========================  ===================================================================
key                         definition (all in [0, 1]; computed on one split)
==========================  ===================================================================
``avg_acc``                 sample-weighted accuracy: correct / total.
``class_acc_<c>``           accuracy on samples of class ``c`` (only classes present).
``worst_class_acc``         min of ``class_acc_<c>`` over classes present.
``group_acc_<g>``           accuracy on group ``g`` (only non-empty groups).
``worst_group_acc``         min of ``group_acc_<g>`` over NON-EMPTY groups (the lowest
                            accuracy, not the smallest group).
``group_mean_acc``          unweighted mean of ``group_acc_<g>`` over non-empty groups.
``train_weighted_acc``      sum_g pi_g * group_acc_<g>, pi_g = train count of g, renormalised
                            over the groups non-empty in this split (only with train counts):
                            accuracy re-weighted to the training group distribution.
``aligned_acc``             accuracy on bias-aligned samples (label == bias attribute).
``conflicting_acc``         accuracy on bias-conflicting samples (label != bias attribute).
``unbiased_acc``            sample-weighted accuracy over the split (= ``avg_acc``); DisEnt's
                            definition, meaningful as "unbiased" only on an unbiased split.
``unbiased_cellmean_acc``   mean accuracy over the non-empty (label, bias) cells; LfF's
                            definition, unbiased even when the split is not balanced.
``macro_auc``               mean over classes of the one-vs-rest ROC AUC of the softmax score,
                            classes absent from the split (or filling it) left out (CFGen on CCT;
                            only for datasets that ask for it).
==========================  ===================================================================

Naming trap: "adjusted accuracy" means ``train_weighted_acc`` in WILDS (Waterbirds' "adjusted
average accuracy") but ``group_mean_acc`` in SubpopBench. Report the names above instead.

A key whose subset is empty in this split (no conflicting samples, say) is left out rather
than set to NaN, so that averages over seeds never silently ignore a NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy_metrics(
    preds: Tensor,
    labels: Tensor,
    groups: Tensor | None,
    bias: Tensor | None,
    num_classes: int,
    num_groups: int,
    train_group_counts: list[int] | None = None,
) -> dict[str, float]:
    """Accuracy metrics of predicted class indices ``preds`` (N,) against ``labels`` (N,).

    ``groups`` (N,) in ``[0, num_groups)`` enables the group metrics, ``bias`` (N,) (the
    spurious attribute, in label space) the aligned/conflicting/unbiased ones. See the module
    docstring for every definition. Tensors may live on any device; counts are exact integers.
    """
    n = _check_1d("preds", preds, None)
    _check_1d("labels", labels, n)
    if n == 0:
        return {}
    correct = (preds == labels).long()
    out: dict[str, float] = {"avg_acc": correct.sum().item() / n}

    class_acc = _subset_accuracies(labels, correct, num_classes, "labels")
    out["worst_class_acc"] = min(class_acc.values())
    out.update({f"class_acc_{c}": acc for c, acc in class_acc.items()})

    if groups is not None:
        _check_1d("groups", groups, n)
        group_acc = _subset_accuracies(groups, correct, num_groups, "groups")
        out.update({f"group_acc_{g}": acc for g, acc in group_acc.items()})
        out["worst_group_acc"] = min(group_acc.values())
        out["group_mean_acc"] = sum(group_acc.values()) / len(group_acc)
        if train_group_counts is not None:
            if len(train_group_counts) != num_groups:
                raise ValueError(f"train_group_counts has {len(train_group_counts)} entries, expected {num_groups}")
            total = sum(train_group_counts[g] for g in group_acc)
            if total > 0:
                out["train_weighted_acc"] = sum(train_group_counts[g] * acc for g, acc in group_acc.items()) / total

    if bias is not None:
        _check_1d("bias", bias, n)
        aligned = (labels == bias).long()
        counts = torch.stack([aligned.sum(), (aligned * correct).sum(), correct.sum()]).tolist()
        n_aligned, right_aligned, right = counts
        if n_aligned:
            out["aligned_acc"] = right_aligned / n_aligned
        if n - n_aligned:
            out["conflicting_acc"] = (right - right_aligned) / (n - n_aligned)
        out["unbiased_acc"] = out["avg_acc"]
        num_bias = int(bias.max().item()) + 1
        cells = labels.long() * num_bias + bias.long()
        cell_acc = _subset_accuracies(cells, correct, num_classes * num_bias, "labels x bias")
        out["unbiased_cellmean_acc"] = sum(cell_acc.values()) / len(cell_acc)
    return out


def binary_auc(scores: Tensor, labels: Tensor) -> float | None:
    """ROC AUC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1}; None if one class is absent.

    The Mann-Whitney statistic on ranks, ties given their average rank (so a tie between a
    positive and a negative counts 1/2). Computed on CPU in float64 for exact rank sums.
    """
    n = _check_1d("scores", scores, None)
    _check_1d("labels", labels, n)
    scores = scores.detach().to("cpu", torch.float64)
    labels = labels.detach().cpu()
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("binary_auc needs labels in {0, 1}")
    positive = labels.bool()
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each distinct value
    rank_sum = mean_rank[inverse][positive].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def macro_auc(scores: Tensor, labels: Tensor) -> float | None:
    """Mean one-vs-rest AUC of ``scores`` (N, C) over the classes with both positives and negatives."""
    aucs = [binary_auc(scores[:, c], (labels == c).long()) for c in range(scores.shape[1])]
    present = [a for a in aucs if a is not None]
    return sum(present) / len(present) if present else None


def _subset_accuracies(index: Tensor, correct: Tensor, size: int, name: str) -> dict[int, float]:
    """``{i: accuracy}`` for each non-empty ``i`` in ``range(size)``; one bincount, one transfer."""
    both = torch.bincount(index.long() * 2 + correct, minlength=2 * size)
    if both.numel() > 2 * size:
        raise ValueError(f"{name} has values >= {size}")
    both = both.view(size, 2).cpu()
    totals, rights = both.sum(1).tolist(), both[:, 1].tolist()
    return {i: r / t for i, (t, r) in enumerate(zip(totals, rights, strict=True)) if t}


def _check_1d(name: str, tensor: Tensor, length: int | None) -> int:
    if tensor.dim() != 1 or (length is not None and tensor.numel() != length):
        expected = "a 1-D tensor" if length is None else f"a 1-D tensor of length {length}"
        raise ValueError(f"{name} must be {expected} (class indices, not logits), got shape {tuple(tensor.shape)}")
    return tensor.numel()


def adjusted_rand_index(a: Tensor, b: Tensor) -> float:
    """Adjusted Rand index of two labelings (1 = identical partitions, ~0 = chance)."""
    _, a = a.unique(return_inverse=True)
    _, b = b.unique(return_inverse=True)
    table = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    table.index_put_((a.cpu(), b.cpu()), torch.ones(len(a), dtype=torch.float64), accumulate=True)

    def pairs(t: Tensor) -> Tensor:
        return (t * (t - 1) / 2).sum()

    total = pairs(torch.tensor(float(len(a)), dtype=torch.float64))
    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / total if total > 0 else torch.tensor(0.0, dtype=torch.float64)
    maximum = (rows + cols) / 2
    if float(maximum - expected) == 0:
        return 1.0
    return float((index - expected) / (maximum - expected))


def agreement(clusters: Tensor, groups: Tensor) -> dict[str, float]:
    """How well clusters recover the true groups.

    ``ari``: adjusted Rand index. ``purity``: fraction of samples whose cluster's majority group is
    their own. ``worst_group_recall``: each cluster stands for its majority group; a group's recall
    is the fraction of its samples in clusters that stand for it; the minimum over groups (0 when a
    small group has no cluster of its own, the failure that matters for robustness).
    """
    clusters, groups = clusters.cpu(), groups.cpu()
    _, c = clusters.unique(return_inverse=True)
    group_ids = groups.unique()
    _, g = groups.unique(return_inverse=True)
    table = torch.zeros(int(c.max()) + 1, len(group_ids), dtype=torch.long)
    table.index_put_((c, g), torch.ones(len(c), dtype=torch.long), accumulate=True)
    majority = table.argmax(dim=1)  # the group each cluster stands for
    hit = majority[c] == g
    recalls = torch.stack([hit[g == j].float().mean() for j in range(len(group_ids))])
    return {
        "ari": adjusted_rand_index(clusters, groups),
        "purity": float(hit.float().mean()),
        "worst_group_recall": float(recalls.min()),
        "num_clusters": float(len(table)),
    }
