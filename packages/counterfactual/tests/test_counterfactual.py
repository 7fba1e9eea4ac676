"""The CF/F batch's foreground and its losses (robust_counterfactual.counterfactual), on hand-made batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from robust_counterfactual.counterfactual import batch_foreground, counterfactual_batch_losses, counterfactual_loss
from robust_counterfactual.infill import boxes_to_mask

from robust.api import Batch


def test_the_foreground_of_a_batch_with_boxes_only_is_its_boxes_at_the_image_size():
    """Non-square images, and N, C, H, W all different, so that no axis stands in for another."""
    x = torch.zeros(2, 3, 5, 7)
    bbox = torch.tensor([[1, 0, 6, 2], [0, 3, 7, 5]])
    batch = Batch(x=x, y=torch.zeros(2, dtype=torch.long), index=torch.arange(2), bbox=bbox)
    mask = batch_foreground(batch)
    assert mask.shape == (2, 1, 5, 7)
    assert torch.equal(mask, boxes_to_mask(bbox, 5, 7))
    assert mask[0, 0, :2, 1:6].all() and mask[0].sum() == 10 and mask[1, 0, 3:].all() and mask[1].sum() == 14


def test_a_mask_wins_over_boxes_and_no_annotation_gives_none():
    x = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1, 2] = 1.0
    batch = Batch(
        x=x, y=torch.zeros(1, dtype=torch.long), index=torch.arange(1), mask=mask, bbox=torch.tensor([[0, 0, 4, 4]])
    )
    assert torch.equal(batch_foreground(batch), mask)
    assert batch_foreground(batch.replace(mask=None, bbox=None)) is None


def test_one_counterfactual_image_counts_in_both_terms():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    cf_logits, removed = torch.randn(1, 4), torch.tensor([3])
    c, c_cf = counterfactual_batch_losses(logits, labels, cf_logits, removed)
    ce = F.cross_entropy(logits, labels, reduction="sum")
    assert c.item() == pytest.approx(ce.item() / 4)
    assert c_cf.item() == pytest.approx(counterfactual_loss(cf_logits, removed).sum().item() / 4) and c_cf != 0


@pytest.mark.parametrize("missing", ["cf_logits", "removed"])
def test_without_counterfactual_logits_or_their_classes_only_the_labelled_loss_remains(missing):
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    given = {"cf_logits": torch.randn(2, 4), "removed": torch.tensor([1, 3])}
    given[missing] = None
    c, c_cf = counterfactual_batch_losses(logits, labels, **given)
    assert c.item() == pytest.approx(F.cross_entropy(logits, labels).item()) and c_cf == 0


@pytest.mark.parametrize("kind", ["bogus", "zzz"])  # before and after the known names in sort order
def test_an_unknown_counterfactual_loss_is_refused(kind):
    with pytest.raises(ValueError, match=f"unknown counterfactual loss '{kind}'"):
        counterfactual_loss(torch.randn(2, 3), torch.tensor([0, 1]), kind)
