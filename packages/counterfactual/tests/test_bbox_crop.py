"""The augmentation bbox_crop_flip (robust_counterfactual.bbox_crop): every crop keeps part of the
foreground box, and the mask and the box move with the image."""

from __future__ import annotations

import torch


def test_bbox_crop_keeps_part_of_the_box_and_moves_the_mask_with_it():
    from robust.augment import augment  # through the registry: the name the plugin registers

    gen = torch.Generator().manual_seed(0)
    n, size = 256, 28
    x = torch.rand(n, 3, size, size, generator=gen)
    boxes = torch.tensor([[0, 0, 3, 3]] * (n // 2) + [[20, 22, 28, 28]] * (n // 2))  # near the corners
    mask = torch.zeros(n, 1, size, size)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        mask[i, :, y0:y1, x0:x1] = 1
    out, out_mask, out_box = augment("bbox_crop_flip", x, mask, boxes, gen)
    assert out.shape == x.shape and out_mask.shape == mask.shape
    kept = out_mask.flatten(1).sum(1)
    assert bool((kept > 0).all()), "every crop must keep part of the foreground"
    width = (out_box[:, 2] - out_box[:, 0]).clamp(min=0)
    height = (out_box[:, 3] - out_box[:, 1]).clamp(min=0)
    assert bool(((width > 0) & (height > 0)).all())
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    # The crops vary: not every image is cut at the same place.
    assert len({tuple(b) for b in out_box[: n // 2].tolist()}) > 1
