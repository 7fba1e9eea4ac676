"""cmnist, cifar10c, bffhq: the biased datasets of LfF / DisEnt, as DisEnt releases them (PNG folders).

Layout under the dataset folder (``DATA_ROOT/cmnist``, ``DATA_ROOT/cifar10c``, ``DATA_ROOT/bffhq``)::

    cmnist/<pct>/align/<cls>/<id>_<y>_<b>.png       bias-aligned training images (y == b)
    cmnist/<pct>/conflict/<cls>/<id>_<y>_<b>.png    bias-conflicting ones (y != b)
    cmnist/<pct>/valid/<id>_<y>_<b>.png             flat for cmnist, valid/<cls>/... for cifar10c
    cmnist/test/<cls>/<id>_<y>_<b>.png              unbiased, shared by every pct
    bffhq/0.5pct/{align,conflict}/<cls>/...          bffhq has 0.5pct only; its valid/ and
    bffhq/valid/<id>_<y>_<b>.png, bffhq/test/...     test/ are flat siblings of 0.5pct/

``<pct>`` is ``0.5pct``, ``1pct``, ``2pct`` or ``5pct`` (option ``conflict_pct``: the percentage
of bias-conflicting training images). As in DisEnt, labels come from the file name only: the
target is the second-to-last ``_`` token of the stem and the bias the last one; the class folder
is never read, and flat and nested ``valid``/``test`` folders are both accepted (files are found
recursively). Group ``g = y·C + b`` (C = 10 classes for cmnist/cifar10c, 2 for bffhq), and
``bias = b``, so "aligned" means ``y == b``.

Splits: ``train`` = align + conflict of the chosen pct; ``val`` = DisEnt's ``valid`` (train-like
bias ratio, DisEnt issue #1); ``test`` = the unbiased ``test`` folder. DisEnt keeps only the
bias-conflicting BFFHQ test images; we keep all of them, and declare ``conflicting_acc`` (y != b)
as bffhq's ``test_metric``, the number DisEnt reports (aligned accuracy comes for free).

Preprocessing as DisEnt (§1.9 of our notes): cmnist 28×28 RGB with ``ToTensor`` only (mean 0,
std 1), no augmentation; cifar10c 32×32 and bffhq 224×224 normalised with the **CIFAR** mean/std
(DisEnt uses them for bffhq too) and trained with crop + flip. Everything is small enough to
decode into memory (``in_memory=auto``). Names of the bias values: the colours of LfF's
``colors.th`` for cmnist; for cifar10c the corruption list written by our generator
(``metadata.json``, :mod:`robust_datasets.lff_generators`) when present, else ``corruption<b>``
(DisEnt does not say which corruptions its release uses); bffhq [recall, unchecked] target age
(0 young, 1 old), bias gender (0 female, 1 male). Counts are not assumed: ``info.extra`` has
``n_align`` and ``n_conflict`` as found on disk.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from robust.api import DataError
from robust_datasets.h5cache import cached_dataset
from robust_datasets.missing import missing_dataset
from robust_datasets.options import ImageDatasetConfig
from robust_datasets.sources import LFF_SOURCE
from robust_datasets.synthetic_cmnist import COLOR_NAMES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle, Split

PCTS = (0.5, 1.0, 2.0, 5.0)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
METADATA_FILE = "metadata.json"  # written by our generators; optional


def pct_folder(pct: float) -> str:
    """The folder of a conflict percentage: 0.5 -> ``0.5pct``, 1.0 -> ``1pct``."""
    return f"{pct:g}pct"


class _LfFConfig(ImageDatasetConfig):
    conflict_pct: float = Field(
        1.0, description="Percent of bias-conflicting training images: 0.5, 1, 2 or 5 (the folder <pct>pct)."
    )

    @field_validator("conflict_pct")
    @classmethod
    def _known_pct(cls, value: float) -> float:
        if value not in PCTS:
            raise ValueError(f"conflict_pct must be one of {', '.join(f'{p:g}' for p in PCTS)}, got {value:g}")
        return value


class LfFCMNISTConfig(_LfFConfig):
    """Options of cmnist (DisEnt's Colored MNIST release)."""

    image_size: int = Field(28, ge=8, le=1024, description="Side of the square images, in pixels (released: 28).")


class LfFCIFAR10CConfig(_LfFConfig):
    """Options of cifar10c (DisEnt's Corrupted CIFAR-10 release)."""

    image_size: int = Field(32, ge=8, le=1024, description="Side of the square images, in pixels (released: 32).")


class LfFBFFHQConfig(ImageDatasetConfig):
    """Options of bffhq (DisEnt's biased FFHQ release: 0.5 % conflicting only)."""

    conflict_pct: float = Field(
        0.5, description="Percent of bias-conflicting training images; the release has 0.5 only."
    )
    image_size: int = Field(224, ge=8, le=1024, description="Side of the square images, in pixels (DisEnt: 224).")

    @field_validator("conflict_pct")
    @classmethod
    def _only_half(cls, value: float) -> float:
        if value != 0.5:
            raise ValueError(f"bffhq is released with conflict_pct 0.5 only, got {value:g}")
        return value


@dataclass(frozen=True)
class _Layout:
    """Where a dataset's splits live and how it is read."""

    name: str
    class_names: list[str]
    bias_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_augment: str
    shared_eval: bool  # bffhq: valid/ and test/ beside <pct>/ rather than valid/ inside it
    test_metric: str = "avg_acc"  # what DisEnt reports on test

    def folders(self, pct: str) -> dict[str, list[str]]:
        """Folders (relative to the dataset folder) of each split."""
        valid = "valid" if self.shared_eval else f"{pct}/valid"
        return {"train": [f"{pct}/align", f"{pct}/conflict"], "val": [valid], "test": ["test"]}


CMNIST = _Layout("cmnist", [str(d) for d in range(10)], list(COLOR_NAMES), (0.0,) * 3, (1.0,) * 3, "none", False)
CIFAR10C = _Layout(
    "cifar10c", CIFAR10_CLASSES, [f"corruption{b}" for b in range(10)], CIFAR_MEAN, CIFAR_STD, "crop_flip", False
)
BFFHQ = _Layout(
    "bffhq", ["young", "old"], ["female", "male"], CIFAR_MEAN, CIFAR_STD, "crop_flip", True, "conflicting_acc"
)
CROP_PADDING = 4  # DisEnt: RandomCrop(32, padding=4) on cifar10c, RandomCrop(224, padding=4) on bffhq


def parse_name(path: Path) -> tuple[int, int]:
    """``(target, bias)`` from a file named ``..._<target>_<bias>.<ext>``."""
    tokens = path.stem.split("_")
    try:
        if len(tokens) < 2:
            raise ValueError
        return int(tokens[-2]), int(tokens[-1])
    except ValueError:
        raise DataError(
            f"Cannot read the labels from the file name {str(path)!r}: DisEnt's files are named "
            "<id>_<target>_<bias>.png (e.g. 1234_3_8.png)."
        ) from None


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted so the order is the same on every machine."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{str(path)!r} is not valid JSON ({exc}); regenerate the dataset or delete the file."
        ) from None


def _split(files: list[Path], layout: _Layout, config: ImageDatasetConfig) -> Split:
    import torch

    from robust_datasets.imagefiles import ImageFileSplit, Resize, in_memory

    classes, biases = len(layout.class_names), len(layout.bias_names)
    pairs = [parse_name(path) for path in files]
    for path, (y, b) in zip(files, pairs, strict=True):
        if not (0 <= y < classes and 0 <= b < biases):
            raise DataError(
                f"{str(path)!r}: target {y} / bias {b} out of range for {layout.name} "
                f"({classes} classes, {biases} bias values)."
            )
    labels = torch.tensor([y for y, _ in pairs], dtype=torch.long)
    bias = torch.tensor([b for _, b in pairs], dtype=torch.long)
    split = ImageFileSplit(files, labels, Resize(config.image_size), groups=labels * biases + bias, bias=bias)
    return in_memory(split, config.in_memory, config.memory_limit_gb)


def _load(layout: _Layout, config: ImageDatasetConfig, data_root: Path) -> DatasetBundle:
    from robust.api import DatasetBundle, DatasetInfo

    root = Path(config.root) if config.root else Path(data_root) / layout.name
    pct = pct_folder(config.conflict_pct)  # type: ignore[attr-defined]
    folders = layout.folders(pct)
    expected = [f + "/" for paths in folders.values() for f in paths]
    absent = [f for f in expected if not (root / f).is_dir()]
    if absent:
        raise missing_dataset(layout.name, root, expected, LFF_SOURCE, detail=f"Not found: {', '.join(absent)}.")
    files: dict[str, list[Path]] = {}
    for split, paths in folders.items():
        files[split] = [f for folder in paths for f in image_files(root / folder)]
        if not files[split]:
            raise missing_dataset(
                layout.name, root, expected, LFF_SOURCE, detail=f"No image files under {', '.join(paths)}."
            )
    n_align = len(image_files(root / folders["train"][0]))
    n_conflict = len(files["train"]) - n_align
    metadata = _read_metadata(root)
    bias_names = list(layout.bias_names)
    if len(metadata.get("bias_names", [])) == len(bias_names):
        bias_names = [str(n) for n in metadata["bias_names"]]
    layout = replace(layout, bias_names=bias_names)
    splits = {split: _split(paths, layout, config) for split, paths in files.items()}
    train = splits["train"]
    aligned = int((train.labels == train.bias).sum())  # type: ignore[operator]
    if aligned != n_align:
        warnings.warn(
            f"{layout.name} {pct}: {n_align} files in align/ but {aligned} training files with target == bias; "
            "the file names decide (aligned means target == bias).",
            stacklevel=2,
        )
    info = DatasetInfo(
        name=layout.name,
        num_classes=len(layout.class_names),
        input_shape=(3, config.image_size, config.image_size),
        class_names=list(layout.class_names),
        group_names=[f"{c}_{b}" for c in layout.class_names for b in bias_names],
        bias_names=bias_names,
        mean=layout.mean,
        std=layout.std,
        train_augment=layout.train_augment,
        crop_padding=CROP_PADDING,
        test_metric=layout.test_metric,
        extra={
            "conflict_pct": config.conflict_pct,  # type: ignore[attr-defined]
            "n_align": n_align,
            "n_conflict": n_conflict,
            "folder": str(root),
            **({"generator": metadata} if metadata else {}),
        },
    )
    return DatasetBundle(info=info, splits=splits)


def _check(config: Any, cls: type[ImageDatasetConfig]) -> ImageDatasetConfig:
    return config if isinstance(config, cls) else cls.model_validate(config)


@cached_dataset("cmnist", config_class=LfFCMNISTConfig, version=2)
def load_cmnist(config: LfFCMNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Colored MNIST from ``DATA_ROOT/cmnist`` (or ``config.root``)."""
    return _load(CMNIST, _check(config, LfFCMNISTConfig), data_root)


@cached_dataset("cifar10c", config_class=LfFCIFAR10CConfig, version=2)
def load_cifar10c(config: LfFCIFAR10CConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Corrupted CIFAR-10 from ``DATA_ROOT/cifar10c`` (or ``config.root``)."""
    return _load(CIFAR10C, _check(config, LfFCIFAR10CConfig), data_root)


@cached_dataset("bffhq", config_class=LfFBFFHQConfig, version=2)
def load_bffhq(config: LfFBFFHQConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Biased FFHQ from ``DATA_ROOT/bffhq`` (or ``config.root``)."""
    return _load(BFFHQ, _check(config, LfFBFFHQConfig), data_root)
