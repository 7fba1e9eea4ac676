"""Property: a metadata CSV (csv:PATH datasets) with random header, cells and options either loads into
a consistent dataset or is one DataError/ConfigError paragraph naming the CSV; never another exception."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from robust.errors import RobustError
from robust_datasets.csv_dataset import build

COLUMNS = st.sampled_from(["image", "label", "split", "place", "notes", "path", " label ", ""]) | st.text(max_size=5)
CELLS = {
    "image": st.sampled_from(["a.png", "b.png", "c.png", "missing.png", "", "../a.png", "bad.png"]),
    "label": st.sampled_from(["cat", "dog", "0", "1", "2", "-1", "", "1.5"]),
    "split": st.sampled_from(["train", "val", "test", "0", "1", "2", "ood", "TRAIN", "", "validation"]),
    "place": st.sampled_from(["land", "water", "0", ""]),
}


@st.composite
def metadata_csv(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60))  # not even text
    if draw(st.booleans()):  # a valid CSV (every split, both classes and places), then a few cells changed
        header = ["image", "label", "split", "place"]
        rows = [[f"{'abc'[i % 3]}.png", ["cat", "dog"][i % 2], split, ["land", "water"][(i // 2) % 2]]
                for i, split in enumerate(["train"] * 4 + ["val"] * 4 + ["test"] * 4)]  # fmt: skip
        for _ in range(draw(st.integers(0, 3))):
            row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3))
            rows[row][column] = draw(CELLS[header[column]] | st.text(max_size=4))
    else:
        header = draw(st.lists(COLUMNS, min_size=0, max_size=5))
        rows = []
        for _ in range(draw(st.integers(0, 12))):
            width = max(len(header) + draw(st.sampled_from([0, 0, 0, -1, 1])), 0)
            cells = [CELLS.get(header[i].strip(), st.text(max_size=4)) if i < len(header) else st.text(max_size=4)
                     for i in range(width)]  # fmt: skip
            rows.append([draw(cell) for cell in cells])
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return out.getvalue().encode("utf-8")


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "attribute": st.sampled_from(["place", "label", "nope"]),
        "val_fraction": st.sampled_from([0.25, 0.5]),
        "class_names": st.sampled_from([["cat", "dog"], ["dog"], []]),
        "split_values": st.sampled_from([{"ood": "test_ood"}, {"ood": "skip"}, {"ood": "train"}]),
        "path_column": st.sampled_from(["image", "path", "nope"]),
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=metadata_csv(), options=OPTIONS)
def test_metadata_csvs_load_or_fail_naming_the_file(data, options):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, value in (("a.png", 10), ("b.png", 200), ("c.png", 90)):
            Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(folder / name)
        (folder / "bad.png").write_bytes(b"\x89PNG not really")
        path = folder / "metadata.csv"
        path.write_bytes(data)
        try:
            bundle = build({"metadata": str(path), "image_size": 8, "in_memory": "yes", **options}, folder)
        except RobustError as exc:
            message = str(exc)
            assert "\n" not in message and (str(path) in message or str(folder) in message), message
            return
        info = bundle.info
        for split in bundle.splits.values():
            assert len(split.labels) == len(split.groups)
            if len(split.labels):
                assert int(split.labels.min()) >= 0 and int(split.labels.max()) < info.num_classes
                assert int(split.groups.max()) < len(info.group_names)
