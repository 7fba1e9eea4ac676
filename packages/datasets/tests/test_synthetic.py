"""The generated datasets: the correlations they promise, determinism, the cache, the options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from robust.errors import DataError
from robust_datasets import plugin
from robust_datasets import synthetic_cmnist as cmnist
from robust_datasets import synthetic_waterbirds as waterbirds

SMALL_CMNIST = {"n_train": 200, "n_val": 100, "n_test": 100, "version": 1}
SMALL_WATERBIRDS = {"scale": 0.05, "version": 1}


def split_tensors(bundle) -> dict[str, torch.Tensor]:
    out = {}
    for name, split in bundle.splits.items():
        for attr in ("images", "labels", "groups", "bias", "masks", "bboxes"):
            value = getattr(split, attr, None)
            if value is not None:
                out[f"{name}.{attr}"] = value
    return out


def assert_same(a, b) -> None:
    ta, tb = split_tensors(a), split_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


@pytest.fixture(scope="module")
def cm(tmp_path_factory):
    return cmnist.load(cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST), tmp_path_factory.mktemp("cm"))


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return waterbirds.load(waterbirds.SyntheticWaterbirdsConfig(**SMALL_WATERBIRDS), tmp_path_factory.mktemp("wb"))


# ---------------------------------------------------------------------------------------------
# synthetic-cmnist
# ---------------------------------------------------------------------------------------------


def test_cmnist_shapes_and_info(cm):
    assert cm.info.input_shape == (3, 28, 28)
    assert cm.info.class_names == [str(d) for d in range(10)]
    assert len(cm.info.group_names) == 100 and cm.info.bias_names == cmnist.COLOR_NAMES
    for name, n in (("train", 200), ("val", 100), ("test", 100)):
        split = cm.splits[name]
        assert split.images.shape == (n, 3, 28, 28) and split.images.dtype == torch.uint8
        assert torch.equal(split.groups, split.labels * 10 + split.bias)
        assert split.images.amax() > 200  # digits are drawn, bright
    # Labels are balanced over the digits.
    assert torch.bincount(cm.splits["train"].labels, minlength=10).tolist() == [20] * 10
    assert sum(cm.info.train_group_counts) == 200


@pytest.mark.parametrize("pct", [0.0, 0.5, 1.0, 5.0, 37.5])
def test_cmnist_conflict_count_is_exact(tmp_path, pct):
    config = cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST, conflict_pct=pct)
    arrays = cmnist.generate(config)
    labels, bias = arrays["train.labels"], arrays["train.bias"]
    assert int((labels != bias).sum()) == round(200 * pct / 100) == cmnist.conflict_count(200, pct)


def _dominant_colour(images: torch.Tensor) -> np.ndarray:
    """Index of the table colour nearest to each image's brightest pixel (the inside of a stroke)."""
    flat = images.double().flatten(2) / 255.0  # (N, 3, HW)
    brightest = flat.sum(1).argmax(1)
    pixels = flat[torch.arange(len(images)), :, brightest].numpy()  # (N, 3)
    return np.linalg.norm(pixels[:, None, :] - cmnist.COLORS[None], axis=2).argmin(1)


def test_cmnist_bias_is_the_colour(cm):
    for split in cm.splits.values():
        assert (_dominant_colour(split.images) == split.bias.numpy()).all()
    train = cm.splits["train"]
    assert (train.bias == train.labels).sum() == 198  # 1 % of 200 conflict


def test_cmnist_val_and_test_colours_are_uniform_and_independent(tmp_path):
    bundle = cmnist.load(cmnist.SyntheticCMNISTConfig(n_train=10, n_val=2000, n_test=2000, version=1), tmp_path)
    for name in ("val", "test"):
        split = bundle.splits[name]
        counts = torch.bincount(split.bias, minlength=10)
        assert counts.min() > 140 and counts.max() < 260, counts  # 200 expected, sd 13
        aligned = (split.bias == split.labels).float().mean().item()
        assert 0.06 < aligned < 0.14  # 0.1 when colour is independent of the digit


def test_cmnist_deterministic_in_seed(tmp_path, cm):
    again = cmnist.load(cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST), tmp_path / "again")
    assert_same(cm, again)
    other = cmnist.load(cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST, seed=1), tmp_path / "other")
    assert not torch.equal(other.splits["train"].images, cm.splits["train"].images)
    assert not torch.equal(other.splits["train"].labels, cm.splits["train"].labels)


def test_cmnist_colour_noise(tmp_path):
    noisy = cmnist.generate(cmnist.SyntheticCMNISTConfig(n_train=50, n_val=1, n_test=1, color_std=0.2))
    clean = cmnist.generate(cmnist.SyntheticCMNISTConfig(n_train=50, n_val=1, n_test=1, color_std=0.0))
    assert np.array_equal(noisy["train.labels"], clean["train.labels"])
    assert not np.array_equal(noisy["train.images"], clean["train.images"])


@pytest.mark.parametrize(
    "options",
    [
        {"conflict_pct": 150},
        {"conflict_pct": -1},
        {"conflict_pct": 100},
        {"n_train": 0},
        {"seed": -1},
        {"colour": 1},
        {"version": 3},
    ],
)
def test_cmnist_bad_options(tmp_path, options):
    with pytest.raises(ValidationError):
        cmnist.SyntheticCMNISTConfig(**options)
    with pytest.raises(ValidationError):
        cmnist.load(options, tmp_path)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


def _cache_files(root: Path, name: str) -> list[Path]:
    return sorted((root / name).glob("*.npz"))


def test_cache_round_trip(tmp_path, monkeypatch):
    config = cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST)
    first = cmnist.load(config, tmp_path)
    assert len(_cache_files(tmp_path, cmnist.NAME)) == 1

    def fail(config):
        raise AssertionError("the cache file should have been read")

    monkeypatch.setattr(cmnist, "generate", fail)
    assert_same(first, cmnist.load(config, tmp_path))
    # Other options are another file, generated anew.
    with pytest.raises(AssertionError, match="cache file"):
        cmnist.load(cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST, conflict_pct=2.0), tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip_byte", "empty"])
def test_corrupt_cache_is_regenerated(tmp_path, damage, monkeypatch):
    config = waterbirds.SyntheticWaterbirdsConfig(scale=0.02, image_size=32)
    first = waterbirds.load(config, tmp_path)
    (path,) = _cache_files(tmp_path, waterbirds.NAME)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file" * 100)
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # inside the image data: only the zip CRC can tell
        middle = len(data) // 3
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        path.write_bytes(b"")
    calls = []
    generate = waterbirds.generate
    monkeypatch.setattr(waterbirds, "generate", lambda c: calls.append(c) or generate(c))
    assert_same(first, waterbirds.load(config, tmp_path))
    assert len(calls) == 1
    assert path.read_bytes() == data  # rewritten whole
    assert_same(first, waterbirds.load(config, tmp_path))
    assert len(calls) == 1


def test_unwritable_data_root_is_a_data_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="data root"):
        cmnist.load(cmnist.SyntheticCMNISTConfig(**SMALL_CMNIST), blocker)


# ---------------------------------------------------------------------------------------------
# synthetic-waterbirds
# ---------------------------------------------------------------------------------------------


def test_waterbirds_group_counts(wb):
    counts = {name: torch.bincount(split.groups, minlength=4).tolist() for name, split in wb.splits.items()}
    assert counts["train"] == waterbirds.group_counts("train", 0.05, version=1) == [175, 9, 3, 53]
    assert wb.info.train_group_counts == counts["train"]
    for name, totals in (("val", waterbirds.VAL_CLASS_COUNTS), ("test", waterbirds.TEST_CLASS_COUNTS)):
        c = counts[name]
        for y in (0, 1):
            land, water = c[2 * y], c[2 * y + 1]
            assert land - water in (0, 1)  # balanced by place within each class
            assert land + water == round(totals[y] * 0.05)


@pytest.mark.parametrize("scale", [0.001, 0.05, 0.5, 1.0, 2.0])
def test_waterbirds_counts_follow_the_real_dataset(scale):
    train = waterbirds.group_counts("train", scale, version=1)
    assert min(train) >= 1
    for got, real in zip(train, waterbirds.TRAIN_GROUP_COUNTS, strict=True):
        assert got == max(1, round(real * scale))
    if scale == 1.0:
        assert train == [3498, 184, 56, 1057]
        assert waterbirds.group_counts("val", 1.0, version=1) == [467, 466, 133, 133]
        assert waterbirds.group_counts("test", 1.0, version=1) == [2255, 2255, 642, 642]
    for split in ("val", "test"):
        assert min(waterbirds.group_counts(split, scale, version=1)) >= 1


def test_waterbirds_bias_is_the_place(wb):
    """Water scenes are bluer than green; forests greener than blue, on the background pixels."""
    for split in wb.splits.values():
        assert torch.equal(split.groups, split.labels * 2 + split.bias)
        background = (split.masks == 0).float()
        rgb = split.images.float()
        blue_minus_green = ((rgb[:, 2] - rgb[:, 1]) * background[:, 0]).sum((1, 2)) / background.sum((1, 2, 3))
        assert torch.equal((blue_minus_green > 0).long(), split.bias)


def test_waterbirds_masks_and_boxes(wb):
    for split in wb.splits.values():
        masks = split.masks
        n = len(split)
        assert masks.shape == (n, 1, 64, 64) and masks.dtype == torch.uint8
        assert set(masks.unique().tolist()) <= {0, 255}
        fg = masks[:, 0] > 0
        assert fg.flatten(1).any(1).all()  # every image has a bird
        assert split.bboxes.shape == (n, 4) and split.bboxes.dtype == torch.int64
        for i in range(n):
            x0, y0, x1, y1 = split.bboxes[i].tolist()
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inside = torch.zeros_like(fg[i])
            inside[y0:y1, x0:x1] = True
            assert not (fg[i] & ~inside).any()  # the mask is inside the box
            # ... and the box is tight: the mask touches each of its four edges.
            assert fg[i, y0].any() and fg[i, y1 - 1].any() and fg[i, :, x0].any() and fg[i, :, x1 - 1].any()
        # The bird is pasted: the foreground pixels are not the scene's (size varies, never tiny).
        area = fg.flatten(1).float().mean(1)
        assert area.min() > 0.01 and area.max() < 0.5


def test_waterbirds_info(wb):
    info = wb.info
    assert info.input_shape == (3, 64, 64) and info.num_classes == 2
    assert info.class_names == ["landbird", "waterbird"] and info.bias_names == ["land", "water"]
    assert info.group_names == ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    assert info.has_masks and info.train_augment in ("flip", "crop_flip")


def test_waterbirds_image_size_option(tmp_path):
    bundle = waterbirds.load({"scale": 0.01, "image_size": 40, "version": 1}, tmp_path)
    split = bundle.splits["test"]
    assert bundle.info.input_shape == (3, 40, 40)
    assert split.images.shape[1:] == (3, 40, 40) and split.masks.shape[1:] == (1, 40, 40)
    assert (split.bboxes[:, 2:] <= 40).all()


def test_waterbirds_deterministic_in_seed(tmp_path, wb):
    assert_same(wb, waterbirds.load(waterbirds.SyntheticWaterbirdsConfig(**SMALL_WATERBIRDS), tmp_path / "again"))
    other = waterbirds.load(waterbirds.SyntheticWaterbirdsConfig(**SMALL_WATERBIRDS, seed=3), tmp_path / "other")
    assert not torch.equal(other.splits["train"].images, wb.splits["train"].images)
    assert not torch.equal(other.splits["train"].masks, wb.splits["train"].masks)


@pytest.mark.parametrize(
    "options", [{"scale": 0}, {"scale": -1}, {"image_size": 8}, {"place": "land"}, {"version": 3}, {"version": 0}]
)
def test_waterbirds_bad_options(tmp_path, options):
    with pytest.raises(ValidationError):
        waterbirds.load(options, tmp_path)


# ---------------------------------------------------------------------------------------------
# Version 1 is kept for reproducibility; version 2 is the calibrated benchmark (DATASETS.md)
# ---------------------------------------------------------------------------------------------

# sha256 of the first 16 items of each array, computed from the generators before version 2 existed.
V1_CHECKSUMS = {
    ("waterbirds", "train.images"): "fb337f6dc662fc2660f35dc820bdd652862da8237dcbbc90881d1389b9e476fc",
    ("waterbirds", "train.masks"): "7e8f82579e009f5204956c4f1140e322916794e6139aba6f259e6e3f37d6dcd9",
    ("waterbirds", "train.labels"): "b6043da45b815a188750f9fc46adadcf39ca8f6386bbeafa6080c36abea3d30a",
    ("waterbirds", "test.images"): "54dd60be7a9b15122bb69ba8c045a66d0c879a9ad806e06fe08d70d6f62e9827",
    ("cmnist", "train.images"): "50e19726f83be588920fa2d589cf8a7f3d3431082db6e3670302225b5e13fa3c",
    ("cmnist", "train.labels"): "a2b8ed2cb09fc988ee7dce95f2f3f57fb6f5fb006b029b0c2b7068285721bf54",
    ("cmnist", "train.bias"): "902b24b1679d0e7580900a25c61f155843092928c834e654857edd4df83d1a86",
    ("cmnist", "test.images"): "dd18882d7a6c57a2f7631c437b59530f17121878ffe3c0188126bc0be77bbd67",
}


def test_version_1_is_unchanged():
    """Byte for byte what the generators gave before version 2 (the digits depend on Pillow's font)."""
    import hashlib

    arrays = {
        "waterbirds": waterbirds.generate(waterbirds.SyntheticWaterbirdsConfig(scale=0.02, image_size=32, version=1)),
        "cmnist": cmnist.generate(cmnist.SyntheticCMNISTConfig(n_train=200, n_val=100, n_test=100, version=1)),
    }
    for (dataset, key), digest in V1_CHECKSUMS.items():
        assert hashlib.sha256(arrays[dataset][key][:16].tobytes()).hexdigest() == digest, (dataset, key)


def test_version_defaults():
    # The default stays the data the methods' presets were tuned on until the benchmark is calibrated.
    assert waterbirds.SyntheticWaterbirdsConfig().version == cmnist.SyntheticCMNISTConfig().version == 1
    assert waterbirds.SyntheticWaterbirdsConfig(version=2).image_size == 32
    assert waterbirds.SyntheticWaterbirdsConfig().image_size == 64
    assert waterbirds.SyntheticWaterbirdsConfig(image_size=48).image_size == 48
    v1, v2 = cmnist.SyntheticCMNISTConfig(), cmnist.SyntheticCMNISTConfig(version=2)
    assert (v1.n_train, v1.conflict_pct, v1.n_test) == (10000, 1.0, 2000)
    assert (v2.n_train, v2.conflict_pct, v2.n_test) == (20000, 5.0, 10000)
    assert cmnist.SyntheticCMNISTConfig(conflict_pct=2).conflict_pct == 2.0  # a given option wins


def test_waterbirds_v2_every_group_has_100_training_images_and_the_designed_correlation():
    train = waterbirds.group_counts("train", 1.0)
    assert min(train) >= 100
    landbird_land, landbird_water, waterbird_land, waterbird_water = train
    # The place agrees with the class for most training birds, far more so on land: waterbirds on
    # land are the rarest kind of scene (the worst group), as in the real Waterbirds.
    assert landbird_land / (landbird_land + waterbird_land) > 0.95
    assert 0.7 < waterbird_water / (waterbird_water + landbird_water) < 0.9
    assert waterbird_land == min(train)
    assert landbird_land + landbird_water > 2 * (waterbird_land + waterbird_water)  # landbirds are the majority
    for split in ("val", "test"):
        counts = waterbirds.group_counts(split, 1.0)
        assert min(counts) >= 200
        assert counts[0] == counts[1] and counts[2] == counts[3]  # no correlation: half of each class per place


@pytest.fixture(scope="module")
def wb2(tmp_path_factory):
    return waterbirds.load({"scale": 0.1, "version": 2}, tmp_path_factory.mktemp("wb2"))


def test_waterbirds_v2_splits(wb2):
    assert wb2.info.input_shape == (3, 32, 32)
    train = wb2.splits["train"]
    counts = waterbirds.group_counts("train", 0.1)
    assert torch.bincount(train.groups, minlength=4).tolist() == counts
    aligned = (train.labels == train.bias).float().mean().item()
    assert aligned == pytest.approx((counts[0] + counts[3]) / sum(counts)) and aligned > 0.9
    for name in ("val", "test"):
        split = wb2.splits[name]
        assert (split.labels == split.bias).float().mean().item() == pytest.approx(0.5)
    for split in wb2.splits.values():  # the place is what the background shows (one colour statistic: 99 %)
        background = (split.masks == 0).float()
        rgb = split.images.float()
        blue_minus_green = ((rgb[:, 2] - rgb[:, 1]) * background[:, 0]).sum((1, 2)) / background.sum((1, 2, 3))
        assert ((blue_minus_green > 0).long() == split.bias).float().mean() >= 0.99


def test_waterbirds_v2_birds_are_larger_than_v1(wb2, wb):
    """The core feature is learnable at 32 px: a bird covers several times more of the image than in version 1."""
    area2 = (wb2.splits["train"].masks > 0).float().mean().item()
    area1 = (wb.splits["train"].masks > 0).float().mean().item()
    assert area2 > 2 * area1


def test_waterbirds_v2_deterministic_in_seed(tmp_path, wb2):
    assert_same(wb2, waterbirds.load({"scale": 0.1, "version": 2}, tmp_path / "again"))
    other = waterbirds.load({"scale": 0.1, "seed": 1, "version": 2}, tmp_path / "other")
    assert not torch.equal(other.splits["train"].images, wb2.splits["train"].images)


def test_cmnist_v2_every_digit_has_its_conflicting_share(tmp_path):
    config = cmnist.SyntheticCMNISTConfig(n_train=2000, n_val=10, n_test=1000, version=2)
    arrays = cmnist.generate(config)
    labels, bias = arrays["train.labels"], arrays["train.bias"]
    per_digit = np.bincount(labels[labels != bias], minlength=10)
    assert per_digit.tolist() == [10] * 10  # exactly 5 % of each digit's 200 (at the defaults: 100 of 2000)
    colours = np.bincount(bias[labels != bias], minlength=10)
    assert colours.min() > 0  # the other colour is drawn among the nine others
    test_aligned = (arrays["test.labels"] == arrays["test.bias"]).mean()
    assert 0.07 < test_aligned < 0.13  # test colour independent of the digit (0.1)
    assert np.array_equal(cmnist.generate(config)["train.images"], arrays["train.images"])


# ---------------------------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------------------------


def test_plugin_registers_both_datasets():
    calls = {}

    def register(name, target, *, config=None, description="", aliases=(), **metadata):
        calls[name] = (target, config, description, metadata)

    plugin.register_datasets(register)
    assert {"synthetic-cmnist", "synthetic-waterbirds"} <= set(calls)
    assert calls["synthetic-cmnist"][3]["default_model"] == "mlp"
    assert calls["synthetic-waterbirds"][3]["default_model"] == "cnn"
    from robust.registry import resolve_reference

    for name in ("synthetic-cmnist", "synthetic-waterbirds"):
        target, config, description, _ = calls[name]
        assert callable(resolve_reference(target)) and description
        assert issubclass(resolve_reference(config), cmnist.DatasetConfig)


def test_plugin_and_options_do_not_import_torch():
    code = (
        "import sys, robust_datasets.plugin, robust_datasets.synthetic_cmnist, robust_datasets.synthetic_waterbirds\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_boxes_of_empty_and_drawn_masks_agree_with_the_image_file_rule():
    from robust_datasets.imagefiles import mask_bbox
    from robust_datasets.synthetic_waterbirds import bounding_boxes

    masks = np.zeros((3, 6, 8), dtype=bool)
    masks[1, 2:4, 1:7] = True
    masks[2, 5, 7] = True
    boxes = bounding_boxes(masks)
    assert boxes.tolist() == [mask_bbox(m) for m in masks] == [[0, 0, 0, 0], [1, 2, 7, 4], [7, 5, 8, 6]]
