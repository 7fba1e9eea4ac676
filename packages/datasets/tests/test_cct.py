"""cct from tiny COCO-style annotation files and 32×24 "_sm" images (boxes in 64×48 original pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import cct
from robust_datasets.testing import write_cct


@pytest.fixture()
def root(tmp_path) -> Path:
    write_cct(tmp_path)
    return tmp_path


def test_cct_samples_labels_and_union_boxes(root):
    bundle = cct.load({"image_size": 16}, root)
    assert set(bundle.splits) == {"train", "val", "test", "test_trans", "val_trans"}
    info = bundle.info
    assert info.class_names == ["opossum", "fox", "deer"] and info.extra["category_ids"] == [1, 5, 9]
    train = bundle.splits["train"]
    assert isinstance(train, ArraySplit) and train.groups is None and train.bias is None
    # (image, category) pairs in sorted order: (a,1) (b,5) (d,1) (d,9); (c,30) is empty and dropped
    assert train.labels.tolist() == [0, 1, 0, 2]
    # a: boxes (2,4,6,8) and (10,0,12,2) in the 16x16 image -> union (2,0,12,8)
    # b has no box: the empty box, no foreground (CFGen's -1 coordinates), not the whole image
    assert train.bboxes.tolist() == [[2, 0, 12, 8], [0, 0, 0, 0], [8, 8, 12, 12], [0, 0, 16, 16]]
    assert info.extra["no_box"]["train"] == [1] and info.extra["no_box"]["test"] == []
    assert info.mean == (0.485, 0.456, 0.406) and not info.extra["masks_are_boxes"]
    assert train.images.shape == (4, 3, 16, 16) and train.masks is None
    assert abs(int(train.images[2, 0, 0, 0]) - 70) <= 2  # image d (4th file): grey 70
    assert bundle.splits["test"].labels.tolist() == [1, 0] and bundle.splits["test"].bboxes[0].tolist() == [0, 0, 8, 8]


def test_cct_box_masks(root):
    bundle = cct.load({"image_size": 16, "masks": True}, root)
    masks = bundle.splits["train"].masks
    assert bundle.info.has_masks and masks.shape == (4, 1, 16, 16)
    expected = torch.zeros(16, 16, dtype=torch.uint8)
    expected[4:8, 2:6] = 255
    expected[0:2, 10:12] = 255
    assert torch.equal(masks[0, 0], expected)  # both boxes, not their union
    assert masks[1].sum() == 0  # no box: all-zero mask
    assert bundle.splits["val"].masks is None
    streamed = cct.load({"image_size": 16, "masks": True, "in_memory": "no"}, root).splits["train"]
    image, mask = streamed.read(0)
    assert torch.equal(mask[0], expected) and image.shape == (3, 16, 16)
    assert bundle.info.extra["masks_are_boxes"]


def test_cct_bit_normalization(root):
    info = cct.load({"image_size": 16, "normalization": "bit"}, root).info
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)


def test_scale_box_rounds_outwards_and_stays_inside():
    assert cct.scale_box([1, 1, 1, 1], 64, 48, 16) == (0, 0, 1, 1)
    assert cct.scale_box([60, 40, 100, 100], 64, 48, 16) == (15, 13, 16, 16)
    assert cct.scale_box([float("nan"), 0, 1, 1], 64, 48, 16) is None


def test_missing_file(root):
    (root / "cct" / cct.ANNOTATIONS / "trans_test_annotations.json").unlink()
    with pytest.raises(DataError, match=r"trans_test_annotations\.json") as err:
        cct.load({}, root)
    assert "lila.science" in str(err.value)


def test_bad_json_and_wrong_keys(root):
    path = root / "cct" / cct.ANNOTATIONS / "cis_val_annotations.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"cis_val_annotations\.json"):
        cct.load({}, root)
    path.write_text(json.dumps({"images": [], "annots": []}))
    with pytest.raises(DataError, match=r"keys \['annots', 'images'\].*'annotations', 'categories'"):
        cct.load({}, root)


def test_box_without_image_size(root):
    path = root / "cct" / cct.ANNOTATIONS / "cis_test_annotations.json"
    content = json.loads(path.read_text())
    content["images"] = [{"id": "e"}]
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match="width/height"):
        cct.load({}, root)


def test_corrupt_image(root):
    (root / "cct" / cct.IMAGES / "f.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"f\.jpg"):
        cct.load({"image_size": 16}, root)


def test_registry_end_to_end(root):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "cct")
    bundle = entry.load()(entry.load_config().model_validate({"image_size": 16}), root)
    assert bundle.info.name == "cct" and bundle.info.num_classes == 3
