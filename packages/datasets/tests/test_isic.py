"""isic from a tiny metadata CSV in PruSC's columns (and ours) and 20×16 JPEGs named like ISIC ids."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import isic
from robust_datasets.imagefiles import ImageFileSplit

# split -> images per group (benign_no_patch, benign_patch, malignant_no_patch, malignant_patch)
GROUPS = {0: [5, 3, 4, 0], 1: [2, 1, 2, 0], 2: [2, 2, 2, 1]}
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


def entries() -> list[tuple[str, int, int, int]]:
    """(isic_id, label, patch, split), interleaved."""
    out = [(g // 2, g % 2, s) for s, counts in GROUPS.items() for g, n in enumerate(counts) for _ in range(n)]
    order = np.random.default_rng(1).permutation(len(out))
    return [(f"ISIC_{24306 + k:07d}", *out[i]) for k, i in enumerate(order)]


def write_isic(root: Path, layout: str = "prusc") -> Path:
    folder = root / "isic"
    images = folder / ("multi_groups" if layout == "prusc" else "images")
    images.mkdir(parents=True)
    rows = entries()
    for k, (name, label, patch, _) in enumerate(rows):
        array = np.full((16, 20, 3), (10 * k, 100 + 100 * label, 50), dtype=np.uint8)
        if patch:
            array[10:14, 2:6] = (30, 60, 230)  # a blue sticker
        file = f"{name}.jpg"
        Image.fromarray(array).save(images / file, quality=95)
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        if layout == "prusc":
            writer.writerow(["isic_id", "benign_malignant", "patches", "split", "age_approx"])
            writer.writerows([f"{n}.jpg", -1 if y == 0 else 1, p, s, 55] for n, y, p, s in rows)
        else:  # ours: words, and ids without the extension
            writer.writerow(["image", "label", "patch", "split"])
            words = ("benign", "malignant")
            writer.writerows([n, words[y], p, SPLIT_NAMES[s]] for n, y, p, s in rows)
    return folder


@pytest.fixture()
def root(tmp_path) -> Path:
    write_isic(tmp_path)
    return tmp_path


def counts(split) -> list[int]:
    return torch.bincount(split.groups, minlength=4).tolist()


def test_isic_prusc_layout(root):
    bundle = isic.load({"image_size": 16}, root)
    for code, split in SPLIT_NAMES.items():
        assert counts(bundle.splits[split]) == GROUPS[code]
    train = bundle.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (12, 3, 16, 16)
    assert torch.equal(train.bias, train.groups % 2) and torch.equal(train.labels, train.groups // 2)
    green = train.images[:, 1, 2, 8].int()  # label drives the green channel (100 benign, 200 malignant)
    assert torch.equal((green > 150).long(), train.labels)
    info = bundle.info
    assert info.group_names == ["benign_no_patch", "benign_patch", "malignant_no_patch", "malignant_patch"]
    assert info.bias_names == ["no_patch", "patch"] and info.train_group_counts == [5, 3, 4, 0]
    assert info.extra["images"].endswith("multi_groups") and info.train_augment == "crop_flip"


def test_isic_our_layout_matches(root, tmp_path):
    other = tmp_path / "ours"
    write_isic(other, layout="ours")
    a = isic.load({"image_size": 8}, root)
    b = isic.load({"image_size": 8}, other)
    assert b.info.extra["images"].endswith("images")
    for split in SPLIT_NAMES.values():
        for field in ("labels", "groups", "bias", "images"):
            assert torch.equal(getattr(a.splits[split], field), getattr(b.splits[split], field))


def test_isic_streams_and_options(root):
    folder = root / "isic"
    (folder / "metadata.csv").rename(folder / "raw_val_4groups.csv")
    bundle = isic.load(
        {"image_size": 8, "in_memory": "no", "metadata": "raw_val_4groups.csv", "image_dir": "multi_groups"}, root
    )
    test = bundle.splits["test"]
    assert isinstance(test, ImageFileSplit) and counts(test) == GROUPS[2]
    image, mask = test.read(0)
    assert image.shape == (3, 8, 8) and mask is None


def test_isic_missing_metadata(tmp_path):
    with pytest.raises(DataError, match=r"'isic' is missing or incomplete.*metadata.csv.*isic-archive"):
        isic.load({}, tmp_path)


def test_isic_wrong_header(root):
    path = root / "isic" / "metadata.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["isic_id,diagnosis,patches,split,age_approx", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"header isic_id,diagnosis,patches.*no benign_malignant or label column"):
        isic.load({"image_size": 8}, root)


def test_isic_bad_values(root):
    path = root / "isic" / "metadata.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[3] = "holdout"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"data row 2: split is 'holdout'; expected one of 0, 1, 2, train"):
        isic.load({"image_size": 8}, root)


def test_isic_corrupt_and_missing_image(root):
    name = entries()[0][0]
    path = root / "isic" / "multi_groups" / f"{name}.jpg"
    path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=rf"{name}.jpg.*corrupt"):
        isic.load({"image_size": 8}, root)
    path.unlink()
    with pytest.raises(DataError, match=rf"{name}.jpg.*missing"):
        isic.load({"image_size": 8}, root)


def test_isic_through_registry(root):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "isic")
    bundle = entry.load()(entry.load_config().model_validate({"image_size": 8}), root)
    assert bundle.info.name == "isic" and counts(bundle.splits["val"]) == GROUPS[1]
