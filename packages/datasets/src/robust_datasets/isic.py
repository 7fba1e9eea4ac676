"""isic: ISIC skin-lesion images, benign vs malignant, with the coloured-patch attribute as the spurious one.

Layout (``DATA_ROOT/isic``, or ``dataset.root``)::

    isic/metadata.csv              one row per image (``metadata`` option: another name)
    isic/multi_groups/<image>      the images (``image_dir`` option; default: multi_groups/,
                                   else images/, else the dataset folder itself)

``metadata.csv`` columns, PruSC's (aix-group/prusc ``data/dataset.py``, file
``raw_val_4groups.csv``): ``isic_id`` (the image file name), ``benign_malignant`` (0 benign,
1 malignant), ``patches`` (1 = a coloured patch is in the image) and ``split`` (0 train, 1 val,
2 test); extra columns are ignored. Our own documented layout is accepted too, column by column:
``image``, ``label``, ``patch``, ``split``. Values: labels and patches 0/1 (-1 reads as 0, as
PruSC maps it; ``benign`` / ``malignant`` and ``true`` / ``false`` are accepted), splits 0/1/2 or
``train`` / ``val`` (``valid``, ``validation``) / ``test``. An image name without an extension is
looked up as ``<name>.jpg``, ``.jpeg`` or ``.png`` (ISIC ids are written without one).

Groups ``g = 2·label + patch`` (PruSC: ``y * n_places + patch``): benign_no_patch, benign_patch,
malignant_no_patch, malignant_patch; ``bias`` = patch. In the ISIC archive the patches only occur
in benign images, so malignant_patch may be empty (its accuracy is then undefined).

Images: PruSC evaluates ``Resize(256)`` (shorter side) then ``CenterCrop(224)``: the centred
square of 87.5 % of the shorter side, resized (``crop_fraction``; 1 = the whole image squashed
to a square). ImageNet statistics; ``train_augment`` ``crop_flip`` stands in for PruSC's
RandomResizedCrop(scale 0.7-1) plus flip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from robust.api import DataError
from robust_datasets.csvfiles import read_csv
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import FractionCrop, ImageFileSplit, in_memory
from robust_datasets.missing import missing_dataset
from robust_datasets.options import ImageDatasetConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

NAME = "isic"
SOURCE = (
    "the ISIC archive (isic-archive.com) images with a patch annotation per image (Rieger et al. 2020, "
    "github.com/laura-rieger/deep-explanation-penalization; Nauta et al. 2021); PruSC's own CSV is not published"
)
# Our field -> the column names accepted for it (PruSC's first).
COLUMNS = {
    "image": ("isic_id", "image"),
    "label": ("benign_malignant", "label"),
    "patch": ("patches", "patch"),
    "split": ("split",),
}
IMAGE_DIRS = ("multi_groups", "images")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
LABEL_WORDS = {"benign": 0, "malignant": 1, "false": 0, "true": 1}
SPLIT_WORDS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
CLASS_NAMES = ["benign", "malignant"]
PATCH_NAMES = ["no_patch", "patch"]
GROUP_NAMES = [f"{c}_{p}" for c in CLASS_NAMES for p in PATCH_NAMES]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ISICConfig(ImageDatasetConfig):
    """Options of isic."""

    metadata: str = Field("metadata.csv", description="The metadata CSV, relative to the dataset folder.")
    image_dir: str | None = Field(
        None, description="Folder of the images, relative to the dataset folder (default: multi_groups, images or .)."
    )
    crop_fraction: float = Field(
        0.875,
        gt=0,
        le=1,
        description="Side of the centred square kept, as a fraction of the shorter side (0.875: PruSC's resize 256 "
        "then centre crop 224; 1: whole image resized to a square).",
    )
    train_augment: Literal["none", "flip", "crop_flip"] = Field(
        "crop_flip",
        description="Training augmentation on the device (crop_flip stands in for RandomResizedCrop + flip).",
    )


def _column(header: list[str], field: str, path: Path) -> int:
    for name in COLUMNS[field]:
        if name in header:
            return header.index(name)
    raise DataError(
        f"{str(path)!r} has the header {','.join(header) or '(empty)'} but an ISIC metadata file needs the columns "
        "isic_id,benign_malignant,patches,split (PruSC) or image,label,patch,split (extra columns are ignored); "
        f"no {' or '.join(COLUMNS[field])} column."
    )


def _codes(values: list[str], words: dict[str, int], allowed: tuple[int, ...], path: Path, column: str) -> np.ndarray:
    """Integer codes of one column: numbers (``-1`` -> 0 where 0 is allowed) or the accepted words."""
    out = np.empty(len(values), dtype=np.int64)
    for i, text in enumerate(values):
        key = text.strip().lower()
        try:
            code = words[key] if key in words else int(float(key))
        except ValueError:
            code = None
        if code == -1 and words is LABEL_WORDS:
            code = 0
        if code not in allowed:
            accepted = ", ".join([*map(str, allowed), *words])
            raise DataError(f"{str(path)!r}, data row {i + 1}: {column} is {text!r}; expected one of {accepted}.")
        out[i] = code
    return out


def read_metadata(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Image names, labels, patches and split codes, in file order."""
    header, rows = read_csv(path)
    index = {field: _column(header, field, path) for field in COLUMNS}
    if not rows:
        raise DataError(f"{str(path)!r} has a header but no rows.")
    width = max(index.values()) + 1
    short = next((i for i, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise DataError(
            f"{str(path)!r}, data row {short + 1} has {len(rows[short])} fields; the header has {len(header)}."
        )
    cells = {field: [row[i] for row in rows] for field, i in index.items()}
    names = {field: header[i] for field, i in index.items()}
    return (
        [name.strip() for name in cells["image"]],
        _codes(cells["label"], LABEL_WORDS, (0, 1), path, names["label"]),
        _codes(cells["patch"], LABEL_WORDS, (0, 1), path, names["patch"]),
        _codes(cells["split"], SPLIT_WORDS, (0, 1, 2), path, names["split"]),
    )


def find_image_dir(config: ISICConfig, folder: Path) -> Path:
    if config.image_dir is not None:
        images = folder / config.image_dir
        if not images.is_dir():
            raise missing_dataset(NAME, folder, [config.metadata, f"{config.image_dir}/"], SOURCE)
        return images
    return next((folder / d for d in IMAGE_DIRS if (folder / d).is_dir()), folder)


def resolve(images: Path, names: list[str]) -> list[Path]:
    """The file of each image name; names without an extension get the one found on disk (one listing)."""
    present = set(os.listdir(images))
    paths = []
    for name in names:
        if name in present or Path(name).suffix or "/" in name:
            paths.append(images / name)
            continue
        found = next((name + ext for ext in EXTENSIONS if name + ext in present), name)
        paths.append(images / found)  # a name still not found fails when decoded, naming the file
    return paths


def build(config: ISICConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """ISIC from its metadata CSV and image folder."""
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, ISICConfig):
        config = ISICConfig.model_validate(config)
    folder = Path(config.root) if config.root else Path(data_root) / NAME
    metadata = folder / config.metadata
    if not metadata.is_file():
        raise missing_dataset(
            NAME,
            folder,
            [config.metadata, "multi_groups/<image files>"],
            SOURCE,
            detail=f"Not found: {config.metadata}.",
        )
    names, labels_all, patch_all, split_all = read_metadata(metadata)
    images = find_image_dir(config, folder)
    paths_all = resolve(images, names)
    resize = FractionCrop(config.image_size, fraction=config.crop_fraction, per_side=False)
    splits: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for code, split in SPLIT_CODES.items():
        rows = np.flatnonzero(split_all == code)
        if rows.size == 0:
            raise DataError(f"{str(metadata)!r} has no rows with split {code} ({split}); ISIC needs all three.")
        labels = torch.from_numpy(labels_all[rows])
        patch = torch.from_numpy(patch_all[rows])
        paths = [paths_all[i] for i in rows.tolist()]
        stream = ImageFileSplit(paths, labels, resize, groups=labels * 2 + patch, bias=patch)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
        sizes[split] = int(rows.size)
    info = DatasetInfo(
        name=NAME,
        num_classes=2,
        input_shape=(3, config.image_size, config.image_size),
        class_names=list(CLASS_NAMES),
        group_names=list(GROUP_NAMES),
        bias_names=list(PATCH_NAMES),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment=config.train_augment,
        extra={"folder": str(folder), "metadata": str(metadata), "images": str(images), "split_sizes": sizes},
    )
    return DatasetBundle(info=info, splits=splits)


load = cached_dataset(NAME, config_class=ISICConfig)(build)
