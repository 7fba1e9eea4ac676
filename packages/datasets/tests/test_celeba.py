"""celeba from tiny 20×24 JPEGs named 000001.jpg..., with the real attribute/partition files (.txt and Kaggle .csv)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import ArraySplit
from robust.errors import DataError
from robust_datasets import celeba
from robust_datasets.imagefiles import ImageFileSplit

BLOND, MALE, SMILING = (celeba.ATTRIBUTES.index(a) for a in ("Blond_Hair", "Male", "Smiling"))
# partition -> images per group (non-blond F, non-blond M, blond F, blond M)
GROUPS = {0: [8, 6, 5, 1], 1: [3, 2, 2, 1], 2: [3, 3, 2, 1]}


def make_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    """File names, attribute values (N, 40) in {-1, 1} and partitions, interleaved as the real files are."""
    rng = np.random.default_rng(0)
    entries = [(p, g) for p, counts in GROUPS.items() for g, n in enumerate(counts) for _ in range(n)]
    order = rng.permutation(len(entries))
    entries = [entries[i] for i in order]
    values = rng.choice([-1, 1], size=(len(entries), 40))
    for i, (_, g) in enumerate(entries):
        values[i, BLOND] = 1 if g >= 2 else -1
        values[i, MALE] = 1 if g % 2 else -1
    names = [f"{i + 1:06d}.jpg" for i in range(len(entries))]
    return names, values, np.array([p for p, _ in entries])


def write_images(folder: Path, names: list[str]) -> None:
    images = folder / celeba.IMAGES
    images.mkdir(parents=True)
    for k, name in enumerate(names):
        array = np.full((24, 20, 3), 5 * k, dtype=np.uint8)
        array[:2] = 255  # top rows are cut by the centre crop (20 x 20 of 20 x 24)
        Image.fromarray(array).save(images / name, quality=95)


def write_txt(folder: Path, names: list[str], values: np.ndarray, partitions: np.ndarray) -> None:
    lines = [str(len(names)), " ".join(celeba.ATTRIBUTES) + " "]
    for name, row in zip(names, values, strict=True):
        lines.append(name + "".join(f"{v:3d}" for v in row))  # " -1  1": positives padded, as the real file
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = [f"{name} {p}" for name, p in zip(names, partitions, strict=True)]
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")


def write_csv(folder: Path, names: list[str], values: np.ndarray, partitions: np.ndarray) -> None:
    with (folder / "list_attr_celeba.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *celeba.ATTRIBUTES])
        writer.writerows([name, *row.tolist()] for name, row in zip(names, values, strict=True))
    with (folder / "list_eval_partition.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "partition"])
        writer.writerows(zip(names, partitions.tolist(), strict=True))


@pytest.fixture(scope="module")
def table():
    return make_table()


@pytest.fixture()
def txt_root(tmp_path, table) -> Path:
    names, values, partitions = table
    folder = tmp_path / "celeba"
    write_images(folder, names)
    write_txt(folder, names, values, partitions)
    return tmp_path


@pytest.fixture()
def csv_root(tmp_path, table) -> Path:
    names, values, partitions = table
    folder = tmp_path / "celeba"
    write_images(folder, names)
    write_csv(folder, names, values, partitions)
    return tmp_path


def counts(split) -> list[int]:
    return torch.bincount(split.groups, minlength=4).tolist()


def test_celeba_groups_from_txt(txt_root, table):
    bundle = celeba.load({"image_size": 16}, txt_root)
    for code, split in celeba.SPLIT_CODES.items():
        assert counts(bundle.splits[split]) == GROUPS[code]
    train = bundle.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (20, 3, 16, 16)
    assert torch.equal(train.bias, train.groups % 2) and torch.equal(train.labels, train.groups // 2)
    assert int(train.images[:, :, 0].max()) < 200  # the white top rows were cropped away
    names, _, partitions = table
    first_train = names[int(np.flatnonzero(partitions == 0)[0])]
    assert abs(int(train.images[0, 0, 8, 8]) - 5 * (int(first_train[:6]) - 1)) <= 3  # file order kept
    info = bundle.info
    assert info.class_names == ["not_Blond_Hair", "Blond_Hair"] and info.bias_names == ["not_Male", "Male"]
    assert info.group_names[3] == "Blond_Hair_Male" and info.train_group_counts == GROUPS[0]
    assert info.input_shape == (3, 16, 16) and info.mean == celeba.IMAGENET_MEAN


def test_celeba_txt_and_csv_give_the_same_bundle(txt_root, table, tmp_path):
    names, values, partitions = table
    other = tmp_path / "csv"
    folder = other / "celeba"
    write_images(folder, names)
    write_csv(folder, names, values, partitions)
    a = celeba.load({"image_size": 12}, txt_root)
    b = celeba.load({"image_size": 12}, other)
    assert Path(b.info.extra["attributes_file"]).suffix == ".csv"
    for split in ("train", "val", "test"):
        for field in ("labels", "groups", "bias", "images"):
            assert torch.equal(getattr(a.splits[split], field), getattr(b.splits[split], field))


def test_celeba_other_attributes(txt_root, table):
    _, values, partitions = table
    bundle = celeba.load({"image_size": 8, "target": "Smiling", "spurious": "Blond_Hair"}, txt_root)
    train = partitions == 0
    assert bundle.splits["train"].labels.tolist() == (values[train, SMILING] == 1).astype(int).tolist()
    assert bundle.splits["train"].bias.tolist() == (values[train, BLOND] == 1).astype(int).tolist()


def test_celeba_unknown_attribute(txt_root):
    with pytest.raises(DataError, match=r"no attribute 'Blonde_Hair'.*5_o_Clock_Shadow.*Young"):
        celeba.load({"target": "Blonde_Hair"}, txt_root)
    with pytest.raises(DataError, match="pick two different"):
        celeba.load({"spurious": "Blond_Hair"}, txt_root)


def test_celeba_missing_partition_file(txt_root):
    (txt_root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match=r"'celeba' is missing.*list_eval_partition.txt or list_eval_partition.csv"):
        celeba.load({"image_size": 8}, txt_root)


def test_celeba_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"'celeba' is missing.*img_align_celeba.*mmlab"):
        celeba.load({}, tmp_path)


def test_celeba_corrupt_image(txt_root):
    (txt_root / "celeba" / celeba.IMAGES / "000003.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=r"000003.jpg.*corrupt"):
        celeba.load({"image_size": 8}, txt_root)


def test_celeba_wrong_txt_header(txt_root):
    path = txt_root / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace("Male", "Man"), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"list_attr_celeba.txt' has the header.*Man.*40 CelebA attribute names"):
        celeba.load({"image_size": 8}, txt_root)


def test_celeba_wrong_csv_headers(csv_root):
    partition = csv_root / "celeba" / "list_eval_partition.csv"
    original = partition.read_text()
    partition.write_text(original.replace("image_id,partition", "image,split", 1))
    with pytest.raises(DataError, match=r"header 'image split'; expected image_id,partition"):
        celeba.load({"image_size": 8}, csv_root)
    partition.write_text(original)
    attributes = csv_root / "celeba" / "list_attr_celeba.csv"
    attributes.write_text(attributes.read_text().replace("image_id,", "", 1))
    with pytest.raises(DataError, match=r"header '5_o_Clock_Shadow .*'; expected image_id followed by"):
        celeba.load({"image_size": 8}, csv_root)


def test_celeba_truncated_and_malformed_txt(txt_root):
    path = txt_root / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="line 1 says 37 images but the file lists 36"):
        celeba.load({"image_size": 8}, txt_root)
    lines[5] = lines[5][:-3]  # a row missing its last value
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 6 has 40 fields; expected 41"):
        celeba.load({"image_size": 8}, txt_root)
    lines[5] = lines[5] + "  2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'000004.jpg' has the attribute value '2'"):
        celeba.load({"image_size": 8, "target": "Young"}, txt_root)


def test_celeba_partition_must_cover_every_image(txt_root):
    path = txt_root / "celeba" / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines[1:])) + "\n")  # other order: joined by name; 000001.jpg missing
    with pytest.raises(DataError, match=r"1 images of .* are not in .*'000001.jpg'"):
        celeba.load({"image_size": 8}, txt_root)


def test_celeba_streams_and_kaggle_nesting(csv_root):
    folder = csv_root / "celeba"
    nested = folder / celeba.IMAGES / celeba.IMAGES
    flat = folder / celeba.IMAGES
    flat.rename(folder / "inner")
    flat.mkdir()
    (folder / "inner").rename(nested)
    bundle = celeba.load({"image_size": 8, "memory_limit_gb": 1e-6}, csv_root)
    train = bundle.splits["train"]
    assert isinstance(train, ImageFileSplit) and train.paths[0].parent == nested
    image, mask = train.read(0)
    assert image.shape == (3, 8, 8) and mask is None


def test_celeba_through_registry(txt_root):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "celeba")
    bundle = entry.load()(entry.load_config().model_validate({"image_size": 8}), txt_root)
    assert bundle.info.name == "celeba" and counts(bundle.splits["test"]) == GROUPS[2]
