"""csv: your own data from a metadata CSV and an image folder, as a user brings it (`csv:PATH`)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from robust.data import ArraySplit
from robust.datasets import load_dataset, resolve_dataset_name
from robust.errors import ConfigError, DataError
from robust.registry import get_registry
from robust.resolve import resolve_run_config
from robust_datasets.h5cache import H5Split
from robust_datasets.imagefiles import ImageFileSplit

CLASSES = ("cat", "dog")
PLACES = ("indoor", "outdoor")
# split -> images per group, g = 2 * class + place: a spurious correlation in train only
COUNTS = {"train": (6, 2, 2, 6), "val": (2, 2, 2, 2), "test": (2, 2, 2, 2)}
# how the CSV spells each split: the accepted aliases, not only the canonical names
SPELLING = {"train": "train", "val": "1", "test": "Test"}
WIDE = {"COLUMNS": "200"}


def colour(label: int, place: int) -> tuple[int, int, int]:
    return (40 + 160 * label, 60, 40 + 160 * place)


def write_dataset(folder: Path) -> Path:
    """32x32 PNGs in per-class and per-place subfolders, listed in an interleaved order with an extra column."""
    entries = []
    for split, counts in COUNTS.items():
        for g, count in enumerate(counts):
            entries += [(split, g // 2, g % 2, k) for k in range(count)]
    entries.sort(key=lambda e: (e[3], e[2], e[1], e[0]))  # not grouped by split
    rows = []
    for number, (split, label, place, _) in enumerate(entries):
        relative = f"{CLASSES[label]}s/{PLACES[place]}/img_{number:03d}.png"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        image = np.zeros((32, 32, 3), dtype=np.uint8)
        image[:] = colour(label, place)
        Image.fromarray(image).save(folder / relative)
        rows.append(
            {
                "image": relative,
                "notes": f"#{number}",
                "label": CLASSES[label],
                "split": SPELLING[split],
                "place": PLACES[place],
            }
        )
    write_csv(folder / "metadata.csv", rows)
    return folder / "metadata.csv"


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def metadata(tmp_path) -> Path:
    return write_dataset(tmp_path / "mydata").resolve()


def load(metadata: Path, **options):
    return load_dataset(f"csv:{metadata}", {"image_size": 16, **options})


def group_counts(split, num_groups: int = 4) -> list[int]:
    return torch.bincount(split.groups, minlength=num_groups).tolist()


def invoke(*args: str):
    from robust.cli import cli

    return CliRunner().invoke(cli, list(args), env=WIDE)


# -- loading ----------------------------------------------------------------------------------------


def test_csv_name_resolves_to_the_csv_dataset(metadata):
    entry, options = resolve_dataset_name(get_registry(), f"csv:{metadata}")
    assert entry.name == "csv" and options == {"metadata": str(metadata)}
    # a folder stands for its metadata.csv; a relative path is stored absolute (config.json, the cache key)
    config = entry.load_config().model_validate({"metadata": str(metadata.parent)})
    assert config.metadata == str(metadata.resolve())
    assert "csv" in {e.name for e in get_registry().entries("dataset")}


def test_labels_groups_and_bias_follow_the_csv(metadata):
    bundle = load(metadata, attribute="place", in_memory="no")
    info = bundle.info
    assert info.name == "csv" and info.num_classes == 2 and info.input_shape == (3, 16, 16)
    assert info.class_names == ["cat", "dog"] and info.bias_names == ["indoor", "outdoor"]
    assert info.group_names == [
        "label=cat,place=indoor",
        "label=cat,place=outdoor",
        "label=dog,place=indoor",
        "label=dog,place=outdoor",
    ]
    assert info.train_group_counts == [6, 2, 2, 6]
    assert list(bundle.splits) == ["train", "val", "test"]
    rows = {row["image"]: row for row in read_rows(metadata)}
    for name, counts in COUNTS.items():
        split = bundle.splits[name]
        assert isinstance(split, ImageFileSplit) and group_counts(split) == list(counts)
        for i, path in enumerate(split.paths):  # every sample carries its own row's values
            row = rows[path.relative_to(metadata.parent).as_posix()]
            label, place = CLASSES.index(row["label"]), PLACES.index(row["place"])
            assert SPELLING[name] == row["split"]
            assert (int(split.labels[i]), int(split.bias[i]), int(split.groups[i])) == (label, place, 2 * label + place)
        image, _ = split.read(0)
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
        assert tuple(image[:, 8, 8].tolist()) == colour(int(split.labels[0]), int(split.bias[0]))

    in_memory = load(metadata, attribute="place")  # small: decoded once into memory
    test = in_memory.splits["test"]
    assert isinstance(test, ArraySplit) and test.images.shape == (8, 3, 16, 16)
    expected = torch.tensor([colour(int(y), int(b)) for y, b in zip(test.labels, test.bias, strict=True)])
    assert torch.equal(test.images[:, :, 5, 5].long(), expected)


def test_integer_labels_other_columns_and_no_attribute(tmp_path, metadata):
    rows = read_rows(metadata)
    renamed = [
        {"img_filename": r["image"], "y": str(CLASSES.index(r["label"])), "fold": r["split"], "place": r["place"]}
        for r in rows
    ]
    write_csv(metadata, renamed)
    bundle = load(metadata, label_column="y", split_column="fold")  # path column found as img_filename
    info = bundle.info
    assert info.class_names == ["0", "1"] and info.group_names == ["y=0", "y=1"] and info.bias_names is None
    train = bundle.splits["train"]
    assert train.bias is None and torch.equal(train.groups, train.labels)
    assert torch.bincount(train.labels).tolist() == [8, 8]

    named = load(metadata, label_column="y", split_column="fold", class_names=["cat", "dog"], attribute="place")
    assert named.info.class_names == ["cat", "dog"] and named.info.group_names[1] == "y=cat,place=outdoor"
    assert group_counts(named.splits["train"]) == [6, 2, 2, 6]


def test_class_names_and_attribute_values_fix_the_order(metadata):
    bundle = load(metadata, attribute="place", class_names=["dog", "cat"], attribute_values=["outdoor", "indoor"])
    assert bundle.info.group_names[0] == "label=dog,place=outdoor"
    assert group_counts(bundle.splits["train"]) == [6, 2, 2, 6]  # dog-outdoor, dog-indoor, cat-outdoor, cat-indoor
    train = bundle.splits["train"]
    assert torch.equal(train.groups, train.labels * 2 + train.bias)


def test_frac_subsamples_every_split_stratified_by_group(metadata):
    bundle = load(metadata, attribute="place", frac=0.5)
    assert group_counts(bundle.splits["train"]) == [3, 1, 1, 3]
    assert group_counts(bundle.splits["val"]) == [1, 1, 1, 1]
    assert group_counts(bundle.splits["test"]) == [1, 1, 1, 1]
    for split in bundle.splits.values():  # samples keep their own label and attribute
        assert torch.equal(split.groups, split.labels * 2 + split.bias)
        first = split.images[0, :, 5, 5] if isinstance(split, ArraySplit) else split.read(0)[0][:, 5, 5]
        assert tuple(first.tolist()) == colour(int(split.labels[0]), int(split.bias[0]))
    # as `robust run` resolves it: the protocol option next to the CSV's options
    resolved = resolve_run_config(
        "erm", dataset=f"csv:{metadata}", sets=["dataset.attribute=place", "dataset.frac=0.1"], flags={}
    )
    assert resolved.dataset.name == "csv"
    assert resolved.config.dataset["frac"] == 0.1 and resolved.config.dataset["metadata"] == str(metadata)


def test_val_carved_out_of_train_when_the_csv_has_none(metadata):
    rows = read_rows(metadata)
    for row in rows:
        row["split"] = "train" if row["split"] == SPELLING["val"] else row["split"]
    write_csv(metadata, rows)
    with pytest.raises(DataError, match=r"no val rows.*val_fraction"):
        load(metadata, attribute="place")
    bundle = load(metadata, attribute="place", val_fraction=0.25)
    # train groups now hold 8, 4, 4, 8: a quarter of each (at least one) moves to val
    assert group_counts(bundle.splits["val"]) == [2, 1, 1, 2]
    assert group_counts(bundle.splits["train"]) == [6, 3, 3, 6]
    assert bundle.info.extra["split_sizes"] == {"train": 18, "val": 6, "test": 8}


def test_split_values_map_extra_splits_and_skip_rows(metadata):
    rows = read_rows(metadata)
    for k, row in enumerate(r for r in rows if r["split"] == "Test"):
        row["split"] = ["ood", "junk"][k % 2]
    write_csv(metadata, rows)
    with pytest.raises(DataError, match=r"unknown split value.*'junk'.*'ood'"):
        load(metadata)
    with pytest.raises(DataError, match="no test rows"):
        load(metadata, split_values={"ood": "test_ood", "junk": "skip"})
    bundle = load(metadata, attribute="place", split_values={"OOD": "test", "junk": "test_junk"})
    assert list(bundle.splits) == ["train", "val", "test", "test_junk"]
    assert len(bundle.splits["test"]) == 4 and len(bundle.splits["test_junk"]) == 4
    with pytest.raises(ConfigError, match="maps to 'Bad Name'"):
        load(metadata, split_values={"ood": "Bad Name"})


# -- clear errors ------------------------------------------------------------------------------------


def one_paragraph(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"label_column": "klass"}, ["no column 'klass'", "image, notes, label, split, place", "label_column"]),
        ({"split_column": "fold"}, ["no column 'fold'", "split_column"]),
        ({"path_column": "file"}, ["no column 'file'", "path_column"]),
        ({"attribute": "plase"}, ["attribute='plase' is not a column", "image, notes, label, split, place"]),
        ({"attribute": "label"}, ["is the label column"]),
        ({"class_names": ["cat", "fox"]}, ["'dog'", "neither one of class_names", "'cat', 'fox'"]),
    ],
)
def test_wrong_options_are_one_paragraph(metadata, options, fragments):
    with pytest.raises(DataError) as exc:
        load(metadata, **options)
    message = one_paragraph(exc)
    for fragment in fragments:
        assert fragment in message, message


def test_bad_rows_and_missing_files_are_one_paragraph(metadata):
    original = read_rows(metadata)
    rows = [dict(r) for r in original]
    rows[3]["split"] = "tain"
    write_csv(metadata, rows)
    with pytest.raises(DataError) as exc:
        load(metadata)
    assert "data row 4" in one_paragraph(exc) and "'tain'" in str(exc.value) and "split_values" in str(exc.value)

    rows = [dict(r) for r in original]
    rows[5]["label"] = ""
    write_csv(metadata, rows)
    with pytest.raises(DataError, match="data row 6: column 'label' is empty"):
        load(metadata)

    rows = [{k: v for k, v in r.items() if k != "image"} for r in original]
    write_csv(metadata, rows)
    with pytest.raises(DataError, match=r"no column of image paths.*path_column"):
        load(metadata)

    write_csv(metadata, original)
    gone = metadata.parent / original[7]["image"]
    gone.unlink()
    with pytest.raises(DataError) as exc:
        load(metadata)
    message = one_paragraph(exc)
    assert "1 of the 32 images" in message and gone.name in message and "image_root" in message

    with pytest.raises(DataError, match="does not exist"):
        load(metadata.parent / "nothing.csv")
    with pytest.raises(ConfigError, match="metadata CSV is needed"):
        resolve_run_config("erm", dataset="csv", flags={})


# -- the command line --------------------------------------------------------------------------------


def test_verify_prints_group_counts_and_bad_files(metadata, tmp_path):
    result = invoke("data", "verify", f"csv:{metadata}", "--set", "dataset.attribute=place", "--set", "image_size=16")
    assert result.exit_code == 0, result.output
    for name, counts in zip(
        ("label=cat,place=indoor", "label=cat,place=outdoor", "label=dog,place=indoor", "label=dog,place=outdoor"),
        ([6, 2, 2], [2, 2, 2], [2, 2, 2], [6, 2, 2]),
        strict=True,
    ):
        line = next(line for line in result.stdout.splitlines() if name in line)
        assert [int(n) for n in re.findall(r"\d+", line.split(name, 1)[1])] == counts, line
    assert "OK: csv, 32 images" in result.stdout

    row = read_rows(metadata)[2]
    (metadata.parent / row["image"]).write_bytes(b"\x89PNG not really")
    result = invoke("data", "verify", f"csv:{metadata}", "--set", "image_size=16")
    assert result.exit_code == 1 and "1 problem(s)" in result.stdout and Path(row["image"]).name in result.stdout

    result = invoke("data", "verify", f"csv:{metadata}", "--set", "attribute=where")
    assert result.exit_code == 2 and "attribute='where' is not a column" in result.output
    assert "Traceback" not in result.output


def test_cache_is_read_until_the_csv_changes(metadata, tmp_path):
    root = tmp_path / "data-root"
    options = ["--set", "dataset.attribute=place", "--set", "image_size=16", "--data-root", str(root)]
    result = invoke("data", "cache", f"csv:{metadata}", *options)
    assert result.exit_code == 0, result.output
    cached = load_dataset(f"csv:{metadata}", {"attribute": "place", "image_size": 16, "in_memory": "no"}, root)
    assert isinstance(cached.splits["train"], H5Split)
    assert group_counts(cached.splits["train"]) == [6, 2, 2, 6]

    rows = read_rows(metadata)
    first_train = next(r for r in rows if r["split"] == "train" and r["place"] == "indoor" and r["label"] == "cat")
    first_train["place"] = "outdoor"  # an edited CSV: the cache of the old one must not be used
    write_csv(metadata, rows)
    fresh = load_dataset(f"csv:{metadata}", {"attribute": "place", "image_size": 16, "in_memory": "no"}, root)
    assert isinstance(fresh.splits["train"], ImageFileSplit)
    assert group_counts(fresh.splits["train"]) == [5, 3, 2, 6]


def test_run_erm_end_to_end(metadata, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run", "erm", "--dataset", f"csv:{metadata}", "--set", "dataset.attribute=place",
        "--set", "dataset.image_size=16", "--model", "cnn", "--epochs", "1", "--device", "cpu",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "csv"
    metrics = summary["selection"]["last"]["metrics"]
    assert 0.0 <= metrics["test/worst_group_acc"] <= metrics["test/avg_acc"] <= 1.0
    assert {f"test/group_acc_{g}" for g in range(4)} <= set(metrics)
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["metadata"] == str(metadata) and config["dataset"]["attribute"] == "place"
