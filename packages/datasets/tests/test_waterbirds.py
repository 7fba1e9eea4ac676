"""waterbirds from a tiny release in the real layout: species folders of 24×16 JPEGs, metadata.csv, CUB-style masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import waterbirds
from robust_datasets.imagefiles import ImageFileSplit
from robust_datasets.options import IMAGENET_MEAN
from robust_datasets.testing import (
    waterbirds_rows,
    write_waterbirds,
)


@pytest.fixture()
def release(tmp_path) -> Path:
    write_waterbirds(tmp_path)
    return tmp_path


def group_counts(split) -> list[int]:
    return torch.bincount(split.groups, minlength=4).tolist()


def test_waterbirds_splits_groups_and_info(release):
    bundle = waterbirds.load({"image_size": 16}, release)
    assert list(bundle.splits) == ["train", "val", "test"]
    assert group_counts(bundle.splits["train"]) == [4, 1, 1, 3]
    assert group_counts(bundle.splits["val"]) == [2, 2, 1, 1]
    assert group_counts(bundle.splits["test"]) == [2, 2, 2, 2]
    train = bundle.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (9, 3, 16, 16) and train.masks is None
    assert torch.equal(train.bias, train.groups % 2) and torch.equal(train.labels, train.groups // 2)
    # place drives the background colour: corner pixel is green on land, blue on water
    corner = train.images[:, :, 0, 0].int()
    assert torch.equal((corner[:, 2] > corner[:, 1]).long(), train.bias)
    info = bundle.info
    assert info.group_names == ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    assert info.class_names == ["landbird", "waterbird"] and info.bias_names == ["land", "water"]
    assert info.input_shape == (3, 16, 16) and info.train_group_counts == [4, 1, 1, 3]
    assert info.train_augment == "crop_flip" and not info.has_masks
    assert info.extra["metadata_variant"] == "group_DRO"


def test_waterbirds_keeps_metadata_order(release):
    bundle = waterbirds.load({"image_size": 8, "in_memory": "no"}, release)
    train = bundle.splits["train"]
    assert isinstance(train, ImageFileSplit)
    expected = [r["img_filename"] for r in waterbirds_rows() if r["split"] == 0]
    folder = release / waterbirds.FOLDER
    assert [str(p.relative_to(folder)) for p in train.paths] == expected
    image, mask = train.read(0)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and mask is None


def test_waterbirds_flipped_test(release):
    bundle = waterbirds.load({"image_size": 8, "flipped_test": True}, release)
    test, original, flipped = (bundle.splits[s] for s in ("test", "test_original", "test_flipped"))
    assert len(original) == 4 and len(flipped) == 4
    assert torch.equal(original.labels, original.bias) and bool((flipped.labels != flipped.bias).all())
    same = test.labels == test.bias
    assert torch.equal(original.images, test.images[same]) and torch.equal(flipped.images, test.images[~same])
    assert bundle.eval_split_names == ["val", "test", "test_original", "test_flipped"]
    streamed = waterbirds.load({"image_size": 8, "flipped_test": True, "in_memory": "no"}, release)
    assert isinstance(streamed.splits["test_flipped"], ImageFileSplit)
    assert torch.equal(streamed.splits["test_flipped"].groups, flipped.groups)


def test_waterbirds_masks_and_boxes(release):
    bundle = waterbirds.load({"image_size": 24, "crop_fraction": 1.0, "masks_dir": "segmentations"}, release)
    train = bundle.splits["train"]
    assert bundle.info.has_masks and train.masks.shape == (9, 1, 24, 24)
    assert set(train.masks.unique().tolist()) == {0, 255}
    # the 24x16 image is stretched to 24x24: box rows 3..12 (soft edge included) scale by 1.5, dilated by the resize
    x0, y0, x1, y1 = train.bboxes[0].tolist()
    assert (x0, x1) in {(7, 17), (8, 16), (7, 16), (8, 17)}
    assert 3 <= y0 <= 5 and 17 <= y1 <= 19
    assert bundle.splits["val"].masks is None and bundle.splits["val"].bboxes is None


def test_waterbirds_masks_true_finds_the_segmentations_inside_or_beside_the_folder(release):
    options = {"image_size": 24, "crop_fraction": 1.0}
    explicit = waterbirds.load({**options, "masks_dir": "segmentations"}, release).splits["train"]
    inside = waterbirds.load({**options, "masks": True}, release)
    assert inside.info.has_masks and torch.equal(inside.splits["train"].masks, explicit.masks)
    assert inside.info.extra["masks_dir"] == str(release / waterbirds.FOLDER / "segmentations")
    # CFGen's fetch_waterbird.sh: datasets/waterbird/{waterbird_complete95_forest2water2, segmentations}
    (release / waterbirds.FOLDER / "segmentations").rename(release / "segmentations")
    beside = waterbirds.load({**options, "masks": True}, release)
    assert torch.equal(beside.splits["train"].masks, explicit.masks)
    assert not waterbirds.load(options, release).info.has_masks  # masks are off unless asked for


def test_waterbirds_masks_true_without_segmentations_names_the_folders(tmp_path):
    write_waterbirds(tmp_path, masks=False)
    with pytest.raises(DataError, match=r"masks=true needs the CUB-200-2011 segmentations.*segmentations.*beside"):
        waterbirds.load({"image_size": 8, "masks": True}, tmp_path)


def test_waterbirds_bit_normalization_and_plain_resize(release):
    bundle = waterbirds.load({"image_size": 24, "crop_fraction": 1.0, "normalization": "bit"}, release)
    assert bundle.info.mean == (0.5, 0.5, 0.5) and bundle.info.std == (0.5, 0.5, 0.5)
    assert waterbirds.load({"image_size": 24}, release).info.mean == IMAGENET_MEAN
    # crop_fraction=1: the whole 24x16 image squashed, background colour at the very border
    first = next(r for r in waterbirds_rows() if r["split"] == 1)
    whole = np.array(Image.open(release / waterbirds.FOLDER / first["img_filename"]).convert("RGB").resize((24, 24)))
    val = bundle.splits["val"].images[0].permute(1, 2, 0).numpy()
    assert np.abs(val.astype(int) - whole.astype(int)).max() <= 8  # resampling differences only


def test_waterbirds_streamed_masks_have_boxes(release):
    options = {"image_size": 24, "crop_fraction": 1.0, "masks_dir": "segmentations"}
    loaded = waterbirds.load(options, release).splits["train"]
    for streaming in ({"in_memory": "no"}, {"memory_limit_gb": 1e-9}):
        train = waterbirds.load({**options, **streaming}, release).splits["train"]
        assert isinstance(train, waterbirds.MaskedImageSplit)
        assert torch.equal(train.bboxes, loaded.bboxes)
        image, mask = train.read(3)
        assert torch.equal(image, loaded.images[3]) and torch.equal(mask, loaded.masks[3])


def test_waterbirds_mask_size_mismatch(release):
    first = next(r for r in waterbirds_rows() if r["split"] == 0)
    path = release / waterbirds.FOLDER / "segmentations" / Path(first["img_filename"]).with_suffix(".png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match=r"is 8x8 but its image .* is 24x16"):
        waterbirds.load({"image_size": 8, "masks_dir": "segmentations"}, release)


def test_waterbirds_missing_mask(release):
    first = next(r for r in waterbirds_rows() if r["split"] == 0)
    (release / waterbirds.FOLDER / "segmentations" / Path(first["img_filename"]).with_suffix(".png")).unlink()
    with pytest.raises(DataError, match="1 of 9 training images have no segmentation"):
        waterbirds.load({"image_size": 8, "masks_dir": "segmentations"}, release)
    with pytest.raises(DataError, match="masks_dir is not a folder"):
        waterbirds.load({"image_size": 8, "masks_dir": "nowhere"}, release)


def test_waterbirds_subpopbench_variant(release, tmp_path):
    folder = release / waterbirds.FOLDER
    reference = waterbirds.load({"image_size": 8}, release)
    (folder / "metadata.csv").rename(tmp_path / "old.csv")
    # SubpopBench: <data>/waterbirds/metadata_waterbirds.csv next to the image folder
    subpop_root = tmp_path / "subpop"
    (subpop_root / "waterbirds").mkdir(parents=True)
    folder.rename(subpop_root / "waterbirds" / waterbirds.FOLDER)
    with (subpop_root / "waterbirds" / "metadata_waterbirds.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(waterbirds.SUBPOP_HEADER)
        for r in waterbirds_rows():
            writer.writerow([r["img_id"], r["img_filename"], r["split"], r["y"], r["place"]])
    bundle = waterbirds.load({"image_size": 8}, subpop_root)
    assert bundle.info.extra["metadata_variant"] == "SubpopBench"
    for split in ("train", "val", "test"):
        for field in ("labels", "groups", "bias", "images"):
            assert torch.equal(getattr(bundle.splits[split], field), getattr(reference.splits[split], field))


def test_waterbirds_missing_folder_and_metadata(tmp_path):
    with pytest.raises(DataError, match=r"'waterbirds' is missing or incomplete.*metadata.csv.*group_DRO"):
        waterbirds.load({}, tmp_path)


def test_waterbirds_wrong_header(release):
    path = release / waterbirds.FOLDER / "metadata.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["img_id,img_filename,label,split,place,place_filename", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"header img_id,img_filename,label,split.*needs img_id,img_filename,y"):
        waterbirds.load({"image_size": 8}, release)


def test_waterbirds_bad_split_code(release):
    path = release / waterbirds.FOLDER / "metadata.csv"
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[3] = "3"
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="data row 3: column 'split' is '3'"):
        waterbirds.load({"image_size": 8}, release)


def test_waterbirds_corrupt_image(release):
    first = waterbirds_rows()[0]
    path = release / waterbirds.FOLDER / first["img_filename"]
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="corrupt or not an image") as err:
        waterbirds.load({"image_size": 8}, release)
    assert path.name in str(err.value)


def test_fraction_crop_geometry():
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[:, :4] = 255  # a 4-pixel white band on the left = 1/16 of the width
    crop = waterbirds.FractionCrop(56, fraction=0.875)  # keeps the central 56 x 28: the band is cut off
    out = np.array(crop(Image.fromarray(image)))
    assert out.shape == (56, 56, 3) and out.max() == 0
    square = waterbirds.FractionCrop(16, fraction=0.5, per_side=False)  # central 16 x 16 of the 64 x 32 image
    assert np.array(square(Image.fromarray(image))).max() == 0


def test_waterbirds_through_registry(release):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "waterbirds")
    config = entry.load_config().model_validate({"image_size": 8, "flipped_test": True})
    bundle = entry.load()(config, release)
    assert bundle.info.name == "waterbirds" and len(bundle.splits["test_flipped"]) == 4
