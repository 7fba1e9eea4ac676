"""celeba: CelebA with one binary attribute as the label and another as the spurious one (group_DRO's setting).

Layout (``DATA_ROOT/celeba``, or ``dataset.root``), either the original text files::

    celeba/img_align_celeba/000001.jpg ... 202599.jpg    (178×218 aligned crops)
    celeba/list_attr_celeba.txt       line 1: image count; line 2: the 40 attribute names;
                                      then "000001.jpg  -1  1 ..." (variable whitespace)
    celeba/list_eval_partition.txt    "000001.jpg 0" (0 train, 1 val, 2 test)

or the Kaggle CSV mirror (group_DRO, WILDS): ``list_attr_celeba.csv`` (header
``image_id,5_o_Clock_Shadow,...,Young``) and ``list_eval_partition.csv`` (``image_id,partition``).
Each of the two files is looked for as ``.txt`` first, then ``.csv``. The Kaggle archive's nested
``img_align_celeba/img_align_celeba/`` folder is accepted. The attribute names must be the 40
standard ones in the standard order (a different header is a DataError naming the file).

Labels: ``y`` = ``target`` (default Blond_Hair), ``a`` = ``spurious`` (default Male), each mapped
-1 → 0, 1 → 1 (0 is read as 0 too); groups ``g = 2·y + a`` (group_DRO: 0 non-blond female ... 3
blond male, the minority); ``bias`` = ``a`` itself (so for Blond_Hair/Male "aligned", y == a, is
not the majority pairing: use the groups). Samples keep the attribute file's order.

Images: ``CenterCrop(178)`` then resize to ``image_size`` (group_DRO / SubpopBench evaluation),
ImageNet statistics. 202,599 images do not fit in memory at 224 px: splits stream from the JPEG
files unless ``in_memory`` says otherwise (with the default 4 GB limit, train streams and val and
test, about 3 GB each at 224 px, are decoded into memory). ``train_augment`` (default
``crop_flip``) stands in for the RandomResizedCrop plus flip of PruSC / group_DRO's
``--augment_data``; group_DRO's default runs use none.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from robust.api import DataError
from robust_datasets.csvfiles import read_csv
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import ImageFileSplit, Resize, in_memory
from robust_datasets.missing import missing_dataset
from robust_datasets.options import ImageDatasetConfig
from robust_datasets.sources import CELEBA_SOURCE

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

NAME = "celeba"
IMAGES = "img_align_celeba"
ATTRIBUTES_FILE = "list_attr_celeba"
PARTITION_FILE = "list_eval_partition"
ATTRIBUTES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXPECTED = [
    f"{IMAGES}/000001.jpg ...",
    f"{ATTRIBUTES_FILE}.txt (or .csv)",
    f"{PARTITION_FILE}.txt (or .csv)",
]


class CelebAConfig(ImageDatasetConfig):
    """Options of celeba."""

    target: str = Field("Blond_Hair", description="The attribute that is the label (one of the 40 CelebA names).")
    spurious: str = Field("Male", description="The spurious attribute: groups are 2 * target + spurious.")
    center_crop: int | None = Field(
        178, ge=1, description="Side of the centred square cut before resizing (178: group_DRO; none: whole image)."
    )
    train_augment: Literal["none", "flip", "crop_flip"] = Field(
        "crop_flip",
        description="Training augmentation on the device (crop_flip stands in for RandomResizedCrop + flip; "
        "group_DRO's default runs use none).",
    )


def check_attribute(option: str, value: str) -> int:
    """The column of attribute ``value``; an unknown name is a DataError listing the valid ones."""
    if value not in ATTRIBUTES:
        raise DataError(
            f"CelebA has no attribute {value!r} (option {option}). Valid attributes: {', '.join(ATTRIBUTES)}."
        )
    return ATTRIBUTES.index(value)


def find_file(folder: Path, stem: str) -> Path:
    for suffix in (".txt", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise missing_dataset(NAME, folder, EXPECTED, CELEBA_SOURCE, detail=f"Not found: {stem}.txt or {stem}.csv.")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {str(path)!r} ({exc}).") from None


def _header_error(path: Path, found: list[str], expected: str) -> DataError:
    shown = " ".join(found[:42]) + (" ..." if len(found) > 42 else "")
    return DataError(f"{str(path)!r} has the header {shown or '(empty)'!r}; expected {expected}.")


def read_attributes(path: Path, columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """File names ``(N,)`` and the values of ``columns`` ``(N, len(columns))`` as int64 in {-1, 0, 1}.

    Rows are read one at a time and only the wanted columns kept (the whole table as Python
    strings would take half a gigabyte).
    """
    names: list[str] = []
    cells: list[list[str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            if path.suffix == ".csv":
                reader = csv.reader(handle)
                header = [name.strip() for name in next(reader, [])]
                if header != ["image_id", *ATTRIBUTES]:
                    raise _header_error(path, header, "image_id followed by the 40 CelebA attributes, comma-separated")
                rows: Any = reader
                first_line, count = 2, None
            else:
                count_line = handle.readline()
                header = handle.readline().split()
                if header != ATTRIBUTES:
                    raise _header_error(
                        path, header, "line 1: the image count; line 2: the 40 CelebA attribute names, space-separated"
                    )
                try:
                    count = int(count_line.strip())
                except ValueError:
                    raise DataError(
                        f"{str(path)!r}, line 1 is {count_line!r}; expected the number of images."
                    ) from None
                rows = (line.split() for line in handle)
                first_line = 3
            for number, row in enumerate(rows, start=first_line):
                if not row:
                    continue
                if len(row) != 41:
                    raise DataError(
                        f"{str(path)!r}, line {number} has {len(row)} fields; expected 41: the image file name "
                        "then the 40 attribute values."
                    )
                names.append(row[0].strip())
                cells.append([row[1 + c].strip() for c in columns])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {str(path)!r} ({exc}).") from None
    if count is not None and count != len(names):
        raise DataError(f"{str(path)!r}, line 1 says {count} images but the file lists {len(names)}; is it truncated?")
    if not names:
        raise DataError(f"{str(path)!r} lists no images.")
    table = np.array(cells).reshape(len(names), len(columns))
    files = np.array(names)
    return files, _values(path, table, files)


def read_partition(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """File names ``(N,)`` and partition codes ``(N,)`` (0 train, 1 val, 2 test)."""
    if path.suffix == ".csv":
        header, rows = read_csv(path)
        if header != ["image_id", "partition"]:
            raise _header_error(path, header, "image_id,partition")
        _check_widths(path, rows, 2, first_line=2)
        table = np.array([[row[0].strip(), row[1].strip()] for row in rows]).reshape(len(rows), 2)
        first_line = 2
    else:
        lines = [line.split() for line in _read_text(path).splitlines() if line.strip()]
        _check_widths(path, lines, 2, first_line=1)
        table = np.array(lines).reshape(len(lines), 2)
        first_line = 1
    codes = _codes(table[:, 1])
    bad = np.flatnonzero(~np.isin(codes, (0, 1, 2)))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{str(path)!r}, line {i + first_line}: partition {str(table[i, 1])!r} for {str(table[i, 0])!r}; "
            "expected 0 (train), 1 (val) or 2 (test)."
        )
    return table[:, 0], codes


def _check_widths(path: Path, rows: list[list[str]], width: int, first_line: int) -> None:
    bad = next((i for i, row in enumerate(rows) if len(row) != width), None)
    if bad is not None:
        raise DataError(
            f"{str(path)!r}, line {bad + first_line} (not counting blank lines) has {len(rows[bad])} fields; "
            f"expected {width}: the image file name then {width - 1} value(s)."
        )


def _codes(cells: np.ndarray) -> np.ndarray:
    """Integers from strings; anything that is not an integer becomes 99 (rejected by the caller)."""
    try:
        return cells.astype(np.int64)
    except ValueError:
        flat = [int(c) if c.lstrip("-").isdigit() else 99 for c in cells.ravel().tolist()]
        return np.array(flat, dtype=np.int64).reshape(cells.shape)


def _values(path: Path, cells: np.ndarray, names: np.ndarray) -> np.ndarray:
    values = _codes(cells)
    bad = np.argwhere(~np.isin(values, (-1, 0, 1)))
    if bad.size:
        row, column = bad[0]
        raise DataError(
            f"{str(path)!r}: {str(names[row])!r} has the attribute value {str(cells[row, column])!r}; expected -1 or 1."
        )
    return values


def image_folder(folder: Path) -> Path:
    """``img_align_celeba``, or the Kaggle archive's nested ``img_align_celeba/img_align_celeba``."""
    images = folder / IMAGES
    if not images.is_dir():
        raise missing_dataset(NAME, folder, EXPECTED, CELEBA_SOURCE, detail=f"Not found: {IMAGES}/.")
    nested = images / IMAGES
    return nested if nested.is_dir() and not (images / "000001.jpg").exists() else images


def build(config: CelebAConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CelebA from ``img_align_celeba`` and the attribute and partition files."""
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, CelebAConfig):
        config = CelebAConfig.model_validate(config)
    target = check_attribute("target", config.target)
    spurious = check_attribute("spurious", config.spurious)
    if target == spurious:
        raise DataError(f"target and spurious are both {config.target!r}; pick two different CelebA attributes.")
    folder = Path(config.root) if config.root else Path(data_root) / NAME
    if not folder.is_dir():
        raise missing_dataset(NAME, folder, EXPECTED, CELEBA_SOURCE)
    images = image_folder(folder)
    attribute_path = find_file(folder, ATTRIBUTES_FILE)
    partition_path = find_file(folder, PARTITION_FILE)
    names, values = read_attributes(attribute_path, [target, spurious])
    partition_names, codes = read_partition(partition_path)
    if not np.array_equal(names, partition_names):  # usually the same order: join only when not
        lookup = dict(zip(partition_names.tolist(), codes.tolist(), strict=True))
        absent = [n for n in names.tolist() if n not in lookup]
        if absent:
            raise DataError(
                f"{len(absent)} images of {str(attribute_path)!r} are not in {str(partition_path)!r} "
                f"(e.g. {absent[0]!r}); the two files must list the same images."
            )
        codes = np.array([lookup[n] for n in names.tolist()], dtype=np.int64)
    labels_all = (values[:, 0] == 1).astype(np.int64)
    attribute_all = (values[:, 1] == 1).astype(np.int64)
    resize = Resize(config.image_size, center_crop=config.center_crop)
    splits: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for code, split in SPLIT_CODES.items():
        rows = np.flatnonzero(codes == code)
        if rows.size == 0:
            raise DataError(f"{str(partition_path)!r} puts no image in partition {code} ({split}).")
        labels = torch.from_numpy(labels_all[rows])
        attribute = torch.from_numpy(attribute_all[rows])
        paths = [images / n for n in names[rows].tolist()]
        stream = ImageFileSplit(paths, labels, resize, groups=labels * 2 + attribute, bias=attribute)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
        sizes[split] = int(rows.size)
    class_names = [f"not_{config.target}", config.target]
    bias_names = [f"not_{config.spurious}", config.spurious]
    info = DatasetInfo(
        name=NAME,
        num_classes=2,
        input_shape=(3, config.image_size, config.image_size),
        class_names=class_names,
        group_names=[f"{c}_{b}" for c in class_names for b in bias_names],
        bias_names=bias_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment=config.train_augment,
        extra={
            "folder": str(folder),
            "images": str(images),
            "attributes_file": str(attribute_path),
            "partition_file": str(partition_path),
            "split_sizes": sizes,
        },
    )
    return DatasetBundle(info=info, splits=splits)


load = cached_dataset(NAME, config_class=CelebAConfig)(build)
