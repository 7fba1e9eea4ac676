"""Metrics on hand-made predictions with hand-computed values."""

from __future__ import annotations

import itertools

import pytest
import torch

from robust.metrics import accuracy_metrics, binary_auc

# (label, bias, size, correct) per group; group g has label g // 2 and bias g % 2.
#   g0: aligned,     6 samples, 6 right -> 1.0
#   g1: conflicting, 2 samples, 1 right -> 0.5    (the smallest group)
#   g2: conflicting, 4 samples, 1 right -> 0.25   (the worst group)
#   g3: aligned,     8 samples, 6 right -> 0.75
GROUPS = [(0, 0, 6, 6), (0, 1, 2, 1), (1, 0, 4, 1), (1, 1, 8, 6)]


def make(groups_spec=GROUPS):
    preds, labels, groups, bias = [], [], [], []
    for g, (label, b, size, right) in enumerate(groups_spec):
        for i in range(size):
            labels.append(label)
            preds.append(label if i < right else 1 - label)
            groups.append(g)
            bias.append(b)
    return (torch.tensor(x) for x in (preds, labels, groups, bias))


def test_every_metric_on_four_groups():
    preds, labels, groups, bias = make()
    m = accuracy_metrics(preds, labels, groups, bias, num_classes=2, num_groups=4, train_group_counts=[70, 10, 10, 10])
    expected = {
        "avg_acc": 14 / 20,
        "class_acc_0": 7 / 8,
        "class_acc_1": 7 / 12,
        "worst_class_acc": 7 / 12,
        "group_acc_0": 1.0,
        "group_acc_1": 0.5,
        "group_acc_2": 0.25,
        "group_acc_3": 0.75,
        "worst_group_acc": 0.25,
        "group_mean_acc": 0.625,
        "train_weighted_acc": 0.7 * 1.0 + 0.1 * 0.5 + 0.1 * 0.25 + 0.1 * 0.75,  # 0.85
        "aligned_acc": 12 / 14,
        "conflicting_acc": 2 / 6,
        "unbiased_acc": 14 / 20,
        "unbiased_cellmean_acc": 0.625,
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
        assert isinstance(m[key], float)


def test_worst_group_is_lowest_accuracy_not_smallest_group():
    preds, labels, groups, _ = make()
    m = accuracy_metrics(preds, labels, groups, None, 2, 4, None)
    assert m["worst_group_acc"] == m["group_acc_2"] != m["group_acc_1"]


def test_train_weighted_and_group_mean_differ():
    preds, labels, groups, _ = make()
    m = accuracy_metrics(preds, labels, groups, None, 2, 4, [70, 10, 10, 10])
    assert m["train_weighted_acc"] == pytest.approx(0.85)
    assert m["group_mean_acc"] == pytest.approx(0.625)
    # Equal train counts make them equal.
    m = accuracy_metrics(preds, labels, groups, None, 2, 4, [5, 5, 5, 5])
    assert m["train_weighted_acc"] == pytest.approx(m["group_mean_acc"])


def test_empty_group_is_ignored_and_weights_renormalised():
    preds, labels, groups, _ = make()
    m = accuracy_metrics(preds, labels, groups, None, 2, 5, [70, 10, 10, 10, 1000])
    assert "group_acc_4" not in m
    assert m["worst_group_acc"] == pytest.approx(0.25)
    assert m["group_mean_acc"] == pytest.approx(0.625)
    assert m["train_weighted_acc"] == pytest.approx(0.85)


def test_no_train_counts_no_train_weighted():
    preds, labels, groups, _ = make()
    assert "train_weighted_acc" not in accuracy_metrics(preds, labels, groups, None, 2, 4, None)


def test_no_groups_no_bias_gives_class_metrics_only():
    preds, labels, _, _ = make()
    m = accuracy_metrics(preds, labels, None, None, 3, 0, None)
    assert set(m) == {"avg_acc", "worst_class_acc", "class_acc_0", "class_acc_1"}  # class 2 absent
    assert m["worst_class_acc"] == pytest.approx(7 / 12)


def test_aligned_only_split_omits_conflicting():
    spec = [GROUPS[0], (0, 1, 0, 0), (1, 0, 0, 0), GROUPS[3]]
    preds, labels, groups, bias = make(spec)
    m = accuracy_metrics(preds, labels, groups, bias, 2, 4, None)
    assert "conflicting_acc" not in m
    assert m["aligned_acc"] == pytest.approx(12 / 14)
    assert m["unbiased_cellmean_acc"] == pytest.approx((1.0 + 0.75) / 2)
    assert not any(v != v for v in m.values())  # no NaN


def test_cellmean_differs_from_sample_weighted():
    preds, labels, _, bias = make()
    m = accuracy_metrics(preds, labels, None, bias, 2, 0, None)
    assert m["unbiased_acc"] == pytest.approx(0.7) == m["avg_acc"]
    assert m["unbiased_cellmean_acc"] == pytest.approx(0.625)
    # Bias values beyond the classes (e.g. 3 colours, 2 classes): cells are (label, bias) pairs.
    m = accuracy_metrics(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]), None, torch.tensor([0, 2, 2, 2]), 2, 0)
    assert m["unbiased_cellmean_acc"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["aligned_acc"] == pytest.approx(1.0)  # only sample 0 has label == bias
    assert m["conflicting_acc"] == pytest.approx(2 / 3)


def test_empty_split_and_bad_inputs():
    empty = torch.zeros(0, dtype=torch.long)
    assert accuracy_metrics(empty, empty, empty, empty, 2, 4, None) == {}
    preds, labels, groups, _ = make()
    with pytest.raises(ValueError, match="logits"):
        accuracy_metrics(torch.zeros(20, 2), labels, None, None, 2, 0)
    with pytest.raises(ValueError, match="length 20"):
        accuracy_metrics(preds, labels, groups[:5], None, 2, 4)
    with pytest.raises(ValueError, match=">= 3"):
        accuracy_metrics(preds, labels, groups, None, 2, 3)
    with pytest.raises(ValueError, match="train_group_counts"):
        accuracy_metrics(preds, labels, groups, None, 2, 4, [1, 2])


def test_binary_auc_hand_values():
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert binary_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == pytest.approx(0.5)
    # positive 0.5 ties negative 0.5 (counts 1/2): (1 + 0.5 + 2) / 4
    assert binary_auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.875)
    assert binary_auc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == pytest.approx(0.0)
    assert binary_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])) is None


def test_binary_auc_matches_pairwise_definition():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (60,), generator=gen).float()  # many ties
    labels = torch.randint(0, 2, (60,), generator=gen)
    pos, neg = scores[labels == 1].tolist(), scores[labels == 0].tolist()
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert binary_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    with pytest.raises(ValueError):
        binary_auc(scores, labels + 1)


def test_macro_auc_averages_one_vs_rest_over_present_classes():
    from robust.metrics import binary_auc, macro_auc

    scores = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 1, 0])  # class 2 absent: left out
    expected = (binary_auc(scores[:, 0], (labels == 0).long()) + binary_auc(scores[:, 1], (labels == 1).long())) / 2
    assert macro_auc(scores, labels) == pytest.approx(expected)
    assert macro_auc(scores[:2, :], torch.tensor([0, 0])) is None
