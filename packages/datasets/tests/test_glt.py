"""imagenet-glt / mscoco-glt from tiny annotation files in the generators' schema (absolute foreign paths)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import glt

WNIDS = ["n01440764", "n01443537", "n01484850"]
OLD = "/data4/imagenet/ILSVRC/Data/CLS-LOC/train"  # the generator's machine: does not exist here


def save(path: Path, value: int, size: tuple[int, int] = (20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def imagenet_split(items: list[tuple[int, int, int]], prefix: str = OLD) -> dict:
    """items: (class, attribute, file number) -> the generator's {label, frequency, attribute} maps."""
    split: dict = {"label": {}, "frequency": {}, "attribute": {}}
    for label, attribute, k in items:
        path = f"{prefix}/{WNIDS[label]}/{WNIDS[label]}_{k}.JPEG"
        split["label"][path] = str(label)  # the generator writes string class keys
        split["frequency"][path] = [0, 1, 2][label]
        split["attribute"][path] = attribute
    return split


def write_imagenet_glt(root: Path, prefix: str = OLD) -> Path:
    folder = root / "imagenet-glt"
    for label, wnid in enumerate(WNIDS):
        for k in range(12):
            save(folder / "train" / wnid / f"{wnid}_{k}.JPEG", 10 * label + k)
    id2cat = {str(i): w for i, w in enumerate(WNIDS)}
    cat2id = {w: str(i) for i, w in enumerate(WNIDS)}
    lt = {
        "cat2id": cat2id,
        "id2cat": id2cat,
        "train": imagenet_split([(0, 0, 0), (0, 0, 1), (0, 1, 2), (1, 0, 0), (1, 2, 1), (2, 0, 0)], prefix),
        "val": imagenet_split([(0, 0, 3), (1, 0, 3), (2, 0, 3)], prefix),
        "test_lt": imagenet_split([(0, 0, 4), (1, 1, 4)], prefix),
        "test_bl": imagenet_split([(0, 0, 5), (1, 0, 5), (2, 1, 5)], prefix),
        "test_bbl": imagenet_split([(c, a, 6 + a) for c in range(3) for a in range(3)], prefix),
    }
    bl = {**lt, "train": imagenet_split([(c, 0, 9) for c in range(3)], prefix),
          "test_lt": {"label": {}, "frequency": {}, "attribute": {}}}  # fmt: skip
    (folder / "imagenet_sup_intra_lt_inter_lt.json").write_text(json.dumps(lt))
    (folder / "imagenet_sup_intra_lt_inter_bl.json").write_text(json.dumps(bl))
    return folder


@pytest.fixture()
def root(tmp_path) -> Path:
    write_imagenet_glt(tmp_path)
    return tmp_path


def test_glt_protocol_splits_groups_and_rerooted_paths(root):
    bundle = glt.load_imagenet_glt({"image_size": 8, "in_memory": "no"}, root)
    assert set(bundle.splits) == {"train", "val", "test", "test_glt", "test_cbl"}
    info = bundle.info
    assert info.class_names == WNIDS and info.extra["split_keys"]["test"] == "test_bbl"
    assert info.extra["num_attributes"] == 3 and info.num_groups == 9 and info.group_names[4] == "n01443537_att1"
    assert info.extra["class_frequency"] == [0, 1, 2]
    train = bundle.splits["train"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 2] and train.groups.tolist() == [0, 0, 1, 3, 5, 6]
    assert train.bias is None
    assert train.paths[0] == root / "imagenet-glt/train/n01440764/n01440764_0.JPEG"
    assert info.train_group_counts == [2, 1, 0, 1, 0, 1, 1, 0, 0]
    test = bundle.splits["test"]
    assert len(test) == 9 and torch.bincount(test.groups, minlength=9).tolist() == [1] * 9


def test_clt_and_alt_protocols(root):
    clt = glt.load_imagenet_glt({"protocol": "CLT", "image_size": 8}, root)
    assert clt.info.extra["split_keys"] == {"train": "train", "val": "val", "test": "test_bl", "test_glt": "test_lt",
                                            "test_gbl": "test_bbl"}  # fmt: skip
    alt = glt.load_imagenet_glt({"protocol": "ALT", "image_size": 8}, root)
    assert alt.splits["train"].labels.tolist() == [0, 1, 2]  # Train-CBL from the _bl file
    assert set(alt.splits) == {"train", "val", "test", "test_cbl"}  # its test_lt is empty
    only = glt.load_imagenet_glt({"image_size": 8, "extra_tests": False}, root)
    assert set(only.splits) == {"train", "val", "test"}


def test_images_short_side_resize_and_centre_crop(root):
    bundle = glt.load_imagenet_glt({"image_size": 8}, root)
    train = bundle.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (6, 3, 8, 8)
    assert int(train.images[1, 0, 4, 4]) == 1  # class 0 file 1: grey 1
    crop = glt.ShortSideCrop(8)
    image = Image.fromarray(np.arange(14 * 20 * 3, dtype=np.uint8).reshape(14, 20, 3))
    expected = image.resize((12, 9), Image.BILINEAR).crop((2, 0, 10, 8))  # short side 14 -> 9, then centre 8
    assert np.array_equal(np.array(crop(image)), np.array(expected))
    squash = glt.load_imagenet_glt({"image_size": 8, "center_crop": False}, root)
    assert squash.splits["train"].images.shape == (6, 3, 8, 8)


def test_existing_absolute_and_relative_paths_and_image_root(tmp_path):
    images = tmp_path / "elsewhere"
    folder = write_imagenet_glt(tmp_path, prefix=str(images))  # absolute paths that exist
    for wnid in WNIDS:
        for k in range(12):
            save(images / wnid / f"{wnid}_{k}.JPEG", 100 + k)
    bundle = glt.load_imagenet_glt({"image_size": 8}, tmp_path)
    assert int(bundle.splits["train"].images[0, 0, 0, 0]) == 100
    write_imagenet_glt(tmp_path / "rel", prefix="train")  # relative to the annotation file's folder
    bundle = glt.load_imagenet_glt({"image_size": 8, "in_memory": "no"}, tmp_path / "rel")
    assert bundle.splits["val"].paths[0] == tmp_path / "rel/imagenet-glt/train/n01440764/n01440764_3.JPEG"
    bundle = glt.load_imagenet_glt({"image_size": 8, "in_memory": "no", "image_root": str(images)}, tmp_path / "rel")
    assert bundle.splits["val"].paths[0].is_relative_to(tmp_path / "rel")  # relative paths ignore image_root
    write_imagenet_glt(tmp_path / "moved")
    moved = glt.load_imagenet_glt({"image_size": 8, "image_root": str(images)}, tmp_path / "moved")
    assert int(moved.splits["train"].images[0, 0, 0, 0]) == 100 and folder.exists()


def test_mscoco_glt_path_map(tmp_path):
    folder = tmp_path / "mscoco-glt"
    names = ["person", "dog"]
    content: dict = {"cat2id": {n: i for i, n in enumerate(names)}, "id2cat": {str(i): n for i, n in enumerate(names)},
                     "key2path": {}}  # fmt: skip
    for split, keys in (("train", [11, 12, 13]), ("val", [21, 22]), ("test_lt", [31]), ("test_bl", [41, 42]),
                        ("test_bbl", [51, 52])):  # fmt: skip
        content[split] = {"label": {}, "frequency": {}, "attribute": {}, "path": {}, "attribute_score": {}}
        for i, key in enumerate(keys):
            content[split]["label"][str(key)] = i % 2
            content[split]["frequency"][str(key)] = i % 2
            content[split]["attribute"][str(key)] = i % 3
            content[split]["path"][str(key)] = f"/data4/coco_glt/coco_glt/images/{key}.jpg"
            save(folder / "coco_glt/images" / f"{key}.jpg", key, size=(10, 10))
    (folder / "coco_glt").mkdir(parents=True, exist_ok=True)
    (folder / "coco_glt/annotation.json").write_text(json.dumps(content))
    bundle = glt.load_mscoco_glt({"image_size": 8}, tmp_path)
    assert bundle.info.class_names == names and bundle.info.mean == glt.MSCOCO_GLT.mean
    train = bundle.splits["train"]
    assert train.labels.tolist() == [0, 1, 0] and train.groups.tolist() == [0, 4, 2]
    assert abs(int(train.images[1, 0, 4, 4]) - 12) <= 1
    with pytest.raises(DataError, match=r"coco_cbl/annotation\.json"):
        glt.load_mscoco_glt({"protocol": "ALT"}, tmp_path)


def test_missing_and_malformed_annotations(root):
    with pytest.raises(DataError, match=r"imagenet_sup_intra_lt_inter_lt\.json") as err:
        glt.load_imagenet_glt({}, root / "nowhere")
    assert "Generalized-Long-Tailed" in str(err.value)
    path = root / "imagenet-glt/imagenet_sup_intra_lt_inter_lt.json"
    content = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in content.items() if k != "test_bbl"}))
    with pytest.raises(DataError, match=r"missing \['test_bbl'\]"):
        glt.load_imagenet_glt({}, root)
    assert (
        glt.load_imagenet_glt({"protocol": "CLT", "image_size": 8}, root).info.extra["split_keys"]["test"] == "test_bl"
    )
    del content["val"]["attribute"][next(iter(content["val"]["label"]))]
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match="no attribute"):
        glt.load_imagenet_glt({}, root)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON list"):
        glt.load_imagenet_glt({}, root)


def test_corrupt_and_missing_image(root):
    bad = root / "imagenet-glt/train/n01443537/n01443537_5.JPEG"  # in test_bl
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"n01443537_5\.JPEG"):
        glt.load_imagenet_glt({"image_size": 8, "protocol": "CLT"}, root)
    bad.unlink()
    with pytest.raises(DataError, match="missing"):
        glt.load_imagenet_glt({"image_size": 8, "protocol": "CLT"}, root)


def test_registry_end_to_end(root):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "imagenet-glt")
    bundle = entry.load()(entry.load_config().model_validate({"image_size": 8, "protocol": "CLT"}), root)
    assert bundle.info.name == "imagenet-glt" and len(bundle.splits["test"]) == 3
