"""in9 / in9l from a tiny bg_challenge tree (ImageFolder layout, 16×16 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import imagenet9
from robust_datasets.imagefiles import ImageFileSplit
from robust_datasets.testing import IN9_CLASSES, IN9_FOREGROUND, IN9_SIDE, in9_image, save_image, write_imagenet9


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in9")
    write_imagenet9(root)
    return root


def test_in9_splits_classes_and_test_variants(tree):
    bundle = imagenet9.load_in9({"image_size": 16}, tree)
    assert set(bundle.splits) == {"train", "val", "test", "test_mixed_same", "test_mixed_rand", "test_mixed_next"}
    info = bundle.info
    assert info.class_names == ["dog", "bird", "fish"] and info.extra["class_folders"] == IN9_CLASSES
    assert info.num_classes == 3 and info.input_shape == (3, 16, 16) and info.group_names == []
    for split in bundle.splits.values():
        assert isinstance(split, ArraySplit) and split.groups is None and split.bias is None
        assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]
    train = bundle.splits["train"]
    assert torch.equal(train.images[2].permute(1, 2, 0), torch.from_numpy(np.array(Image.open(
        tree / "bg_challenge/train/original/train/01_bird/n1_0.png"))))  # fmt: skip
    assert train.masks is None and not info.has_masks


def test_in9_masks_from_no_fg(tree):
    bundle = imagenet9.load_in9({"image_size": 16, "masks": True}, tree)
    train = bundle.splits["train"]
    assert bundle.info.has_masks and bundle.info.extra["train_no_fg_files"] == 3
    x0, y0, x1, y1 = IN9_FOREGROUND
    for i in range(6):
        mask = train.masks[i, 0]
        if i % 2 == 0:  # n*_0 has a no_fg image: the blacked square
            expected = torch.zeros(IN9_SIDE, IN9_SIDE, dtype=torch.uint8)
            expected[y0:y1, x0:x1] = 255
            assert torch.equal(mask, expected)
            assert train.bboxes[i].tolist() == [x0, y0, x1, y1]
        else:  # no no_fg image: all-zero mask and the empty box (no foreground known), as CCT's boxless images
            assert mask.sum() == 0 and train.bboxes[i].tolist() == [0, 0, 0, 0]
    assert bundle.splits["val"].masks is None


def test_in9_masks_resized_and_streamed(tree):
    bundle = imagenet9.load_in9({"image_size": 8, "masks": True, "in_memory": "no"}, tree)
    train = bundle.splits["train"]
    assert isinstance(train, ImageFileSplit)
    image, mask = train.read(0)
    assert image.shape == (3, 8, 8) and mask.shape == (1, 8, 8)
    rows = torch.nonzero(mask[0].any(dim=1)).flatten()
    assert rows.min() >= 2 and rows.max() <= 6 and mask.sum() > 0  # the square, halved (slightly dilated)


def test_in9_mask_rule_needs_both_conditions():
    original = np.full((2, 2, 3), 50, np.uint8)
    original[0, 0] = 0  # already black in the original: not foreground
    no_fg = original.copy()
    no_fg[0, 0] = 0
    no_fg[1, 1] = 0
    no_fg[0, 1] = [0, 0, 7]  # not zero in every channel
    assert imagenet9.foreground_mask(original, no_fg).tolist() == [[False, False], [False, True]]


def test_in9l_and_extra_tests(tmp_path):
    write_imagenet9(tmp_path, train_set="in9l", per_class=1, no_fg=False)
    # in9l needs the test variants too; the original set is not needed
    bundle = imagenet9.load_in9l({"image_size": 16, "extra_tests": ["only_fg"]}, tmp_path)
    assert len(bundle.splits["train"]) == 3 and "test_only_fg" in bundle.splits
    assert bundle.info.extra["split_folders"]["train"] == "train/in9l/train"
    with pytest.raises(DataError, match="unknown test variant"):
        imagenet9.load_in9l({"extra_tests": ["bogus"]}, tmp_path)
    with pytest.raises(DataError, match="train/original/train"):
        imagenet9.load_in9({}, tmp_path)


def test_missing_variant_and_no_fg(tmp_path):
    folder = write_imagenet9(tmp_path, per_class=1, no_fg=False)
    with pytest.raises(DataError, match="train/no_fg/train") as err:
        imagenet9.load_in9({"masks": True}, tmp_path)
    assert "backgrounds_challenge" in str(err.value)
    for file in (folder / "test/mixed_rand/val").rglob("*.JPEG"):
        file.unlink()
    for sub in sorted((folder / "test/mixed_rand/val").iterdir()):
        sub.rmdir()
    (folder / "test/mixed_rand/val").rmdir()
    with pytest.raises(DataError, match="Not found: test/mixed_rand/val"):
        imagenet9.load_in9({}, tmp_path)


def test_corrupt_image_and_class_mismatch(tmp_path):
    folder = write_imagenet9(tmp_path, per_class=1, no_fg=False)
    bad = folder / "test/mixed_same/val/01_bird/n1_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"n1_0\.JPEG"):
        imagenet9.load_in9({"image_size": 16}, tmp_path)
    save_image(bad, in9_image(1, 0))
    save_image(folder / "test/mixed_next/val/03_extra/x.png", in9_image(0, 1))
    with pytest.raises(DataError, match="same classes"):
        imagenet9.load_in9({"image_size": 16}, tmp_path)


def test_registry_end_to_end(tree):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "in9")
    bundle = entry.load()(entry.load_config().model_validate({"image_size": 16}), tree)
    assert bundle.info.name == "in9" and len(bundle.splits["test_mixed_rand"]) == 6


def test_in9_bit_normalization(tree):
    default = imagenet9.load_in9({"image_size": 16}, tree).info
    bit = imagenet9.load_in9({"image_size": 16, "normalization": "bit"}, tree).info
    assert default.mean == (0.485, 0.456, 0.406) and default.std == (0.229, 0.224, 0.225)
    assert bit.mean == (0.5, 0.5, 0.5) and bit.std == (0.5, 0.5, 0.5)
