"""csv: your own data, given by a metadata CSV (one row per image) and a folder of images.

``robust run erm --dataset csv:PATH/metadata.csv --set dataset.attribute=place``. ``csv:PATH``
is the registered dataset ``csv`` with ``metadata=PATH`` (the ``resolve_dataset`` hook in
:mod:`robust_datasets.plugin`); a folder stands for its ``metadata.csv``. Relative paths start at
the current directory and are stored absolute in the run's config.

The CSV (UTF-8, a header row, extra columns ignored)::

    image,label,split,place
    birds/0001.jpg,landbird,train,land
    birds/0002.jpg,waterbird,val,water

* ``path_column``: the image's path, relative to ``image_root`` (default: the CSV's folder) or
  absolute; by default the first of :data:`PATH_COLUMNS` present in the header.
* ``label_column`` (``label``): class names or integers. Classes are the distinct values sorted
  (numerically when every value is an integer, so labels 0..K-1 keep their numbers), or the
  order given by ``class_names`` (each label then is one of those names, or its index).
* ``split_column`` (``split``): ``train``/``val``/``test`` (also ``0``/``1``/``2`` as in
  Waterbirds, ``training``, ``valid``, ``validation``, ``dev``, ``testing``; any case).
  ``split_values`` maps other values: to a split, to ``skip`` (rows left out), or to a new name,
  an extra test set evaluated and reported under that name. Without val rows, ``val_fraction``
  moves that fraction of every training group to val (seeded by ``split_seed``); without it, a
  CSV with no val rows is an error (model selection needs val).
* ``attribute``: the column whose values, with the label, define the groups (same value rules
  as the label; ``attribute_values`` fixes their order). ``g = label * A + attribute_index``
  (A values), ``bias`` = attribute index (so "aligned" means label index == attribute index),
  group names like ``label=landbird,place=water``. Without ``attribute``, groups are the classes
  (worst-group accuracy is then worst-class accuracy) and there is no bias attribute.

Images are decoded with PIL as RGB and resized to ``image_size`` squared (``crop_fraction`` < 1
keeps the central part of the width and height first, as Waterbirds' protocol), normalised with
``mean``/``std`` (ImageNet's by default: most runs on real images start from ImageNet models).
No training augmentation unless ``train_augment`` says so (unknown data: a flip may change the
label). Every listed image must exist (checked when loading; ``robust data verify`` decodes
them all). ``robust data cache csv:PATH`` works as for other datasets; a cache made from another
version of the CSV (its SHA-256 differs) is ignored, but edited image files are not detected.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from robust.api import DataError, DatasetConfig, expand_user
from robust_datasets.csvfiles import read_csv
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import FractionCrop, ImageFileSplit, in_memory

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

logger = logging.getLogger(__name__)

NAME = "csv"
DEFAULT_METADATA = "metadata.csv"
# Column names taken as the image path when path_column is not given, in this order.
PATH_COLUMNS = (
    "image",
    "image_path",
    "img_path",
    "path",
    "filepath",
    "file_path",
    "filename",
    "file_name",
    "img_filename",
    "image_file",
    "img",
    "file",
)
SPLITS = ("train", "val", "test")
SKIP = "skip"
SPLIT_VALUES = {
    "train": "train",
    "training": "train",
    "0": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "1": "val",
    "test": "test",
    "testing": "test",
    "2": "test",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
README = "README.md, section 'Your own data'"
SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class CSVDatasetConfig(DatasetConfig):
    """Options of csv (your own data)."""

    metadata: str | None = Field(
        None,
        validate_default=True,
        description="The metadata CSV (or a folder holding metadata.csv); `--dataset csv:PATH` sets it.",
    )
    image_root: str | None = Field(None, description="Folder the image paths start from (default: the CSV's folder).")
    path_column: str | None = Field(
        None,
        description="Column of image paths (default: the first present of image, image_path, path, filename, "
        "img_filename and similar names).",
    )
    label_column: str = Field("label", description="Column of class labels (names or integers).")
    split_column: str = Field("split", description="Column of splits: train/val/test (or 0/1/2).")
    attribute: str | None = Field(
        None, description="Column whose values, with the label, define the groups (None: groups = classes)."
    )
    class_names: list[str] | None = Field(
        None, description="The classes in index order (default: the distinct labels, sorted)."
    )
    attribute_values: list[str] | None = Field(
        None, description="The attribute's values in index order (default: the distinct values, sorted)."
    )
    split_values: dict[str, str] = Field(
        default_factory=dict,
        description="More split values: {value = 'train'|'val'|'test'|'skip'|NEW_TEST_SPLIT}, e.g. {ood = 'test_ood'}.",
    )
    val_fraction: float | None = Field(
        None, gt=0, lt=1, description="When the CSV has no val rows: move this fraction of every train group to val."
    )
    split_seed: int = Field(0, ge=0, description="Seed of val_fraction.")
    image_size: int = Field(224, ge=8, le=1024, description="Side of the square images the model sees, in pixels.")
    crop_fraction: float = Field(
        1.0, gt=0, le=1, description="Central fraction of the width and height kept before resizing (1: all of it)."
    )
    train_augment: Literal["none", "flip", "crop_flip"] = Field(
        "none", description="Training augmentation on the device (none: a flip may change what unknown data shows)."
    )
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="Per-channel mean (default ImageNet's).")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="Per-channel std (default ImageNet's).")
    in_memory: Literal["auto", "yes", "no"] = Field(
        "auto", description="Decode every image once and hold the split in memory (auto: when under memory_limit_gb)."
    )
    memory_limit_gb: float = Field(4.0, gt=0, description="Largest decoded split held in memory under in_memory=auto.")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: str | None) -> str:
        if value is None or not str(value).strip():
            raise ValueError(
                "the metadata CSV is needed: pass --dataset csv:PATH/metadata.csv or --set dataset.metadata=PATH"
            )
        path = expand_user(str(value).strip())
        if path.is_dir():
            path = path / DEFAULT_METADATA
        return str(path.resolve())

    @field_validator("image_root")
    @classmethod
    def _image_root(cls, value: str | None) -> str | None:
        return str(expand_user(value).resolve()) if value else None

    @field_validator("split_values")
    @classmethod
    def _split_values(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for key, target in value.items():
            target = str(target).strip()
            if target not in (*SPLITS, SKIP) and not SPLIT_NAME.match(target):
                raise ValueError(
                    f"{key!r} maps to {target!r}; a split value maps to train, val, test, skip, or the name of an "
                    "extra test split (lower case letters, digits, _)"
                )
            checked[_normal(str(key))] = target
        return checked


def _normal(value: str) -> str:
    """A split value as compared: stripped, lower case, ``1.0`` as ``1``."""
    value = value.strip().lower()
    number = _integer(value)
    return str(number) if number is not None else value


def _integer(text: str) -> int | None:
    """The integer ``text`` spells (``3``, ``3.0``), else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _shown(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# -- reading the CSV --------------------------------------------------------------------------------


def _column(header: list[str], path: Path, name: str, role: str, option: str) -> int:
    if name in header:
        return header.index(name)
    raise DataError(
        f"{str(path)!r} has no column {name!r} ({role}); its columns are {', '.join(header) or '(none)'}. "
        f"Rename that column in the CSV's header or name the right one with --set dataset.{option}=COLUMN "
        f"(see {README})."
    )


def _path_column(header: list[str], path: Path, config: CSVDatasetConfig) -> int:
    if config.path_column is not None:
        return _column(header, path, config.path_column, "the image paths", "path_column")
    for name in PATH_COLUMNS:
        if name in header:
            return header.index(name)
    raise DataError(
        f"{str(path)!r} has no column of image paths: none of {', '.join(PATH_COLUMNS)} is in its header "
        f"({', '.join(header) or 'empty'}). Name it with --set dataset.path_column=COLUMN (see {README})."
    )


def _encode(
    cells: list[str], path: Path, column: str, rows: np.ndarray, names: list[str] | None, option: str
) -> tuple[np.ndarray, list[str]]:
    """Indices of ``cells`` and the names of the indices (``rows``: each cell's data row, for errors)."""
    empty = next((i for i, c in enumerate(cells) if not c), None)
    if empty is not None:
        raise DataError(
            f"{str(path)!r}, data row {rows[empty] + 1}: column {column!r} is empty; every row needs a value there."
        )
    if names is not None:
        lookup = {name: i for i, name in enumerate(names)}
        codes = []
        for i, cell in enumerate(cells):
            code = lookup.get(cell)
            if code is None:
                number = _integer(cell)
                code = number if number is not None and 0 <= number < len(names) else None
            if code is None:
                raise DataError(
                    f"{str(path)!r}, data row {rows[i] + 1}: column {column!r} is {cell!r}, which is neither one of "
                    f"{option} ({_shown(names)}) nor an index below {len(names)}. Add it to {option} or fix the row."
                )
            codes.append(code)
        return np.asarray(codes, dtype=np.int64), list(names)
    numbers = [_integer(c) for c in cells]
    if all(n is not None for n in numbers):
        distinct = sorted(set(numbers))  # type: ignore[type-var]
        index = {value: i for i, value in enumerate(distinct)}
        return np.asarray([index[n] for n in numbers], dtype=np.int64), [str(v) for v in distinct]
    distinct_names = sorted(set(cells))
    index = {value: i for i, value in enumerate(distinct_names)}
    return np.asarray([index[c] for c in cells], dtype=np.int64), distinct_names


def _split_names(cells: list[str], path: Path, column: str, config: CSVDatasetConfig) -> list[str]:
    mapping = {**SPLIT_VALUES, **config.split_values}
    normal = [_normal(c) for c in cells]
    unknown = sorted({c for c, n in zip(cells, normal, strict=True) if n not in mapping})
    if unknown:
        first = next(i for i, n in enumerate(normal) if n not in mapping)
        example = unknown[0].strip() or "VALUE"
        raise DataError(
            f"{str(path)!r}, data row {first + 1}: column {column!r} has the unknown split value(s) {_shown(unknown)}. "
            "Known values: train, val, test (also 0/1/2, training, valid, validation, dev, testing, in any case). "
            f'Fix the rows, or map a value with --set \'dataset.split_values={{"{example}" = "train"}}\' (to train, '
            "val, test, skip to leave its rows out, or a new name: an extra test split)."
        )
    return [mapping[n] for n in normal]


def _carve_val(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mask of the training rows moved to val: ``round(fraction * n)`` of each group, at least 1 (groups
    of 2 or more), never the whole group."""
    rng = np.random.default_rng(seed)
    moved = np.zeros(len(groups), dtype=bool)
    for value in np.unique(groups):
        index = np.flatnonzero(groups == value)
        if len(index) < 2:
            continue
        count = min(len(index) - 1, max(1, round(fraction * len(index))))
        moved[rng.choice(index, size=count, replace=False)] = True
    return moved


def build(config: CSVDatasetConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """The dataset a metadata CSV describes (``data_root`` is not used: the CSV gives the paths)."""
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    del data_root
    if not isinstance(config, CSVDatasetConfig):
        config = CSVDatasetConfig.model_validate(config)
    assert config.metadata is not None  # the validator refuses None
    path = Path(config.metadata)
    if not path.is_file():
        raise DataError(
            f"The metadata CSV {str(path)!r} does not exist. `--dataset csv:PATH` (or dataset.metadata) takes the "
            "path of a CSV file with one row per image and columns for the image path, the label, the split and "
            f"any attributes, or of the folder holding it as metadata.csv (see {README})."
        )
    header, rows = read_csv(path)
    if not header:
        raise DataError(
            f"{str(path)!r} is empty; it needs a header row (e.g. image,label,split,place) and a row per image."
        )
    if not rows:
        raise DataError(f"{str(path)!r} has a header but no rows; it needs one row per image.")
    columns = {
        "path": _path_column(header, path, config),
        "label": _column(header, path, config.label_column, "the class labels", "label_column"),
        "split": _column(header, path, config.split_column, "train/val/test", "split_column"),
    }
    if config.attribute is not None:
        if config.attribute not in header:
            raise DataError(
                f"attribute={config.attribute!r} is not a column of {str(path)!r}; its columns are "
                f"{', '.join(header)}. The attribute names the column whose values, with the label, define the "
                f"groups: --set dataset.attribute=COLUMN (see {README})."
            )
        if config.attribute == config.label_column:
            raise DataError(
                f"attribute={config.attribute!r} is the label column; choose another column of {str(path)!r} for "
                "the groups (the spurious attribute), or none."
            )
        columns["attribute"] = header.index(config.attribute)
    width = max(columns.values()) + 1
    short = next((i for i, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise DataError(
            f"{str(path)!r}, data row {short + 1} has {len(rows[short])} fields but the header has {len(header)}; "
            "every row needs a value in every column."
        )
    cells = {field: [row[i].strip() for row in rows] for field, i in columns.items()}

    split_of = np.asarray(_split_names(cells["split"], path, config.split_column, config))
    kept = np.flatnonzero(split_of != SKIP)
    if kept.size == 0:
        raise DataError(f"{str(path)!r}: every row's split maps to skip; no image is left.")
    split_of = split_of[kept]
    labels, class_names = _encode(
        [cells["label"][i] for i in kept], path, config.label_column, kept, config.class_names, "class_names"
    )
    if len(class_names) < 2:
        raise DataError(
            f"{str(path)!r}: column {config.label_column!r} has the single value {class_names[0]!r}; a classifier "
            "needs at least two classes. Is label_column the right column?"
        )
    if config.attribute is not None:
        bias, bias_names = _encode(
            [cells["attribute"][i] for i in kept],
            path,
            config.attribute,
            kept,
            config.attribute_values,
            "attribute_values",
        )
        groups = labels * len(bias_names) + bias
        group_names = [f"{config.label_column}={c},{config.attribute}={a}" for c in class_names for a in bias_names]
    else:
        bias, bias_names = None, None
        groups = labels
        group_names = [f"{config.label_column}={c}" for c in class_names]

    empty = next((i for i in kept.tolist() if not cells["path"][i]), None)
    if empty is not None:
        raise DataError(f"{str(path)!r}, data row {empty + 1}: the image path is empty; every row names one image.")
    image_root = Path(config.image_root) if config.image_root else path.parent
    files = [image_root / cells["path"][i] for i in kept.tolist()]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataError(
            f"{len(absent)} of the {len(files)} images {str(path)!r} lists are missing under {str(image_root)!r} "
            f"(e.g. {_shown([str(p) for p in absent], 3)}). Paths are relative to image_root (default: the CSV's "
            "folder); set --set dataset.image_root=FOLDER if the images are elsewhere, or fix the paths."
        )

    order = [*SPLITS, *dict.fromkeys(s for s in split_of.tolist() if s not in SPLITS)]
    rows_of = {name: np.flatnonzero(split_of == name) for name in order}
    if rows_of["val"].size and config.val_fraction is not None:
        raise DataError(
            f"{str(path)!r} has {rows_of['val'].size} val rows and val_fraction={config.val_fraction} asks for val "
            "rows carved out of train; use one or the other (drop val_fraction to keep the CSV's val split)."
        )
    if not rows_of["val"].size and config.val_fraction is not None and rows_of["train"].size:
        train = rows_of["train"]
        moved = _carve_val(groups[train], config.val_fraction, config.split_seed)
        rows_of["train"], rows_of["val"] = train[~moved], train[moved]
    for name in SPLITS:
        if not rows_of[name].size:
            how = (
                " Mark some rows val, or carve val out of train with --set dataset.val_fraction=0.2 (stratified by "
                "group)."
                if name == "val"
                else f" Mark some rows {name} (split values: train/val/test or 0/1/2)."
            )
            raise DataError(
                f"{str(path)!r} has no {name} rows (column {config.split_column!r}); every dataset needs train, val "
                f"(model selection) and test.{how}"
            )

    resize = FractionCrop(config.image_size, fraction=config.crop_fraction)
    splits: dict[str, Any] = {}
    for name, index in rows_of.items():
        stream = ImageFileSplit(
            [files[i] for i in index.tolist()],
            torch.from_numpy(labels[index]),
            resize,
            groups=torch.from_numpy(groups[index]),
            bias=torch.from_numpy(bias[index]) if bias is not None else None,
        )
        splits[name] = in_memory(stream, config.in_memory, config.memory_limit_gb)
    info = DatasetInfo(
        name=NAME,
        num_classes=len(class_names),
        input_shape=(3, config.image_size, config.image_size),
        class_names=class_names,
        group_names=group_names,
        bias_names=bias_names,
        mean=tuple(config.mean),
        std=tuple(config.std),
        train_augment=config.train_augment,
        extra={
            "metadata": str(path),
            "metadata_sha256": _sha256(path),
            "image_root": str(image_root),
            "columns": {field: header[i] for field, i in columns.items()},
            "split_sizes": {name: int(index.size) for name, index in rows_of.items()},
            "val_from_train": config.val_fraction,
        },
    )
    return DatasetBundle(info=info, splits=splits)


_cached = cached_dataset(NAME, config_class=CSVDatasetConfig)(build)


def load(config: CSVDatasetConfig | dict[str, Any] | None, data_root: Path) -> DatasetBundle:
    """:func:`build`, or its HDF5 cache (``robust data cache csv:PATH``) while the CSV is unchanged."""
    if not isinstance(config, CSVDatasetConfig):
        config = CSVDatasetConfig.model_validate(dict(config or {}))
    bundle = _cached(config, data_root)
    digest = bundle.info.extra.get("metadata_sha256")
    assert config.metadata is not None
    if digest != _sha256(Path(config.metadata)):  # a cache of another version of the CSV
        logger.warning("The cache of %s was made from another version of the CSV; reading the images.", config.metadata)
        return build(config, data_root)
    return bundle


load.build = build  # type: ignore[attr-defined]  # robust data verify / cache build from the files
load.dataset_name = NAME  # type: ignore[attr-defined]
load.cache_version = 1  # type: ignore[attr-defined]
