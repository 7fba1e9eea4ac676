"""in9 and in9l: the ImageNet-9 backgrounds challenge (Xiao et al. 2020), as CFGen trains on it.

Layout (``bg_challenge/``: the challenge release's ``bg_challenge`` folder moved to ``test/``,
the training sets next to it under ``train/``, as CFGen's ``fetch_in9.sh`` arranges them)::

    bg_challenge/train/original/{train,val}/<class>/*.JPEG     in9 training set and its val split
    bg_challenge/train/in9l/{train,val}/<class>/*.JPEG         in9l (the large set), same layout
    bg_challenge/train/no_fg/train/<class>/<same name>         only with masks=true (see below)
    bg_challenge/test/<variant>/val/<class>/*.JPEG             variant: original, mixed_same,
                                                               mixed_rand, mixed_next (required);
                                                               only_fg, no_fg, only_bg_b, only_bg_t

Class folders (``00_dog`` ... ``08_fish``) are read in sorted order, as torchvision's
ImageFolder does (labels are indices in that order; the ``NN_`` prefix is dropped from the class
names), and must be the same in every folder. Files are read recursively in sorted order; the
extensions ImageFolder accepts are accepted (case-insensitive).

Splits: ``train`` = ``train/<set>/train``, ``val`` = ``train/<set>/val``, ``test`` =
``test/original/val``, and ``test_mixed_same``, ``test_mixed_rand``, ``test_mixed_next``
(plus ``test_<variant>`` for each of ``extra_tests``). The BG-gap CFGen reports is
``test_mixed_same`` accuracy minus ``test_mixed_rand`` accuracy. No groups, no bias attribute.

Masks (``masks=true``, training split only, CFGen's IN9Dataset rule): the foreground is where
the ``no_fg`` image of the same class and file name is exactly 0 in all three channels AND
differs from the original in all three channels, computed at the stored resolution, then resized
(bilinear, any non-zero pixel counts: slightly dilated, as CFGen's ceil). An image without a
``no_fg`` file, or whose rule finds no pixel, gets an all-zero mask ("no foreground known":
CFGen trains it as a plain sample); its box is then the whole image. in9l images mostly have
no ``no_fg`` file.

Images are resized to ``image_size`` squares (CFGen: 224, no crop at evaluation) and normalised
with ImageNet statistics, or ``normalization=bit`` (mean = std = 0.5, what CFGen's BiT models use); training
augmentation pad-and-crop plus flip stands in for CFGen's resize-256-random-crop-224 plus flip.
Large splits stream from the files (see ``in_memory``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from pydantic import Field

from robust.api import DataError
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import ImageFileSplit, Resize, decode_image, in_memory
from robust_datasets.missing import missing_dataset
from robust_datasets.options import NormalizedImageConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

    from robust.api import DatasetBundle

SOURCE = (
    "github.com/MadryLab/backgrounds_challenge (releases: backgrounds_challenge_data.tar.gz, the test variants); "
    "training sets original / no_fg / in9l as fetched by CFGen's datasets/fetch_in9.sh "
    "(github.com/zzzace2000/robust_cls_model)"
)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAIN_TESTS = ("mixed_same", "mixed_rand", "mixed_next")
OPTIONAL_TESTS = ("only_fg", "no_fg", "only_bg_b", "only_bg_t")
TRAIN_SETS = {"in9": "original", "in9l": "in9l"}


class ImageNet9Config(NormalizedImageConfig):
    """Options of in9 and in9l."""

    masks: bool = Field(
        False,
        description="Foreground masks for the training split from train/no_fg/train (CFGen's rule); "
        "images without one get an all-zero mask.",
    )
    extra_tests: list[str] = Field(
        default_factory=list,
        description=f"More test variants evaluated as test_<variant>: any of {', '.join(OPTIONAL_TESTS)}.",
    )


class _Native(Resize):
    """Leaves the image at its stored size (the mask rule compares pixels before resizing)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image


NATIVE = _Native(size=1)


def foreground_mask(original: np.ndarray, no_fg: np.ndarray) -> np.ndarray:
    """CFGen's IN9 rule: bool ``(H, W)``, True where ``no_fg`` is 0 and differs from ``original`` in every channel."""
    return ((no_fg == 0) & (no_fg != original)).all(axis=2)


class IN9MaskedSplit(ImageFileSplit):
    """Training images with masks derived from their ``no_fg`` counterpart (``None``: no counterpart)."""

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        import torch

        path = self.paths[index]
        no_fg_path = self.mask_paths[index] if self.mask_paths is not None else None
        original = decode_image(path, NATIVE)
        height, width = original.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        if no_fg_path is not None:
            no_fg = decode_image(Path(no_fg_path), NATIVE)
            if no_fg.shape != original.shape:
                raise DataError(
                    f"{str(no_fg_path)!r} is {no_fg.shape[1]}x{no_fg.shape[0]} but its original {str(path)!r} is "
                    f"{width}x{height}; the no_fg set must match the original set image for image."
                )
            mask = foreground_mask(original, no_fg)
        image = np.array(self.resize(Image.fromarray(original)), dtype=np.uint8)
        small = np.array(self.resize(Image.fromarray(mask.astype(np.uint8) * 255, mode="L")))
        mask_out = np.where(small > 0, 255, 0).astype(np.uint8)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask_out)[None]


def scan_image_folder(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """``(class folder names, image paths, labels)`` of an ImageFolder tree, in ImageFolder's order."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for root, _, files in sorted(os.walk(folder / name, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMG_EXTENSIONS):
                    paths.append(Path(root) / file)
                    labels.append(label)
    return classes, paths, labels


def class_display_name(folder_name: str) -> str:
    """``00_dog`` -> ``dog``; names without an ``NN_`` prefix stay as they are."""
    return re.sub(r"^\d+_", "", folder_name)


def _load(name: str, config: ImageNet9Config | dict[str, Any], data_root: Path) -> DatasetBundle:
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, ImageNet9Config):
        config = ImageNet9Config.model_validate(config)
    unknown = [v for v in config.extra_tests if v not in OPTIONAL_TESTS]
    if unknown:
        raise DataError(f"{name}: unknown test variant(s) {unknown}; extra_tests takes {', '.join(OPTIONAL_TESTS)}.")
    folder = Path(config.root) if config.root else Path(data_root) / "bg_challenge"
    train_set = TRAIN_SETS[name]
    folders = {
        "train": f"train/{train_set}/train",
        "val": f"train/{train_set}/val",
        "test": "test/original/val",
        **{f"test_{v}": f"test/{v}/val" for v in (*MAIN_TESTS, *config.extra_tests)},
    }
    required = list(folders.values()) + (["train/no_fg/train"] if config.masks else [])
    absent = [r for r in required if not (folder / r).is_dir()]
    if absent:
        raise missing_dataset(name, folder, required, SOURCE, detail=f"Not found: {', '.join(absent)}.")

    resize = Resize(config.image_size)
    splits: dict[str, Any] = {}
    class_folders: list[str] | None = None
    counts: dict[str, int] = {}
    no_fg_found = 0
    for split, relative in folders.items():
        classes, paths, labels = scan_image_folder(folder / relative)
        if class_folders is None:
            class_folders = classes
        elif classes != class_folders:
            raise DataError(
                f"{str(folder / relative)!r} has class folders {classes}, but {str(folder / folders['train'])!r} has "
                f"{class_folders}; every split must have the same classes (ImageFolder numbers them in sorted order)."
            )
        if not paths:
            raise DataError(f"{str(folder / relative)!r} holds no images ({', '.join(IMG_EXTENSIONS)}).")
        y = torch.tensor(labels, dtype=torch.long)
        if split == "train" and config.masks:
            no_fg_root = folder / "train/no_fg/train"
            mask_paths: Sequence[Path | None] = [
                _no_fg_path(no_fg_root, classes[c], p) for p, c in zip(paths, labels, strict=True)
            ]
            no_fg_found = sum(p is not None for p in mask_paths)
            stream: ImageFileSplit = IN9MaskedSplit(paths, y, resize, mask_paths=mask_paths)
        else:
            stream = ImageFileSplit(paths, y, resize)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
        counts[split] = len(paths)
    assert class_folders is not None
    class_names = [class_display_name(c) for c in class_folders]
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        input_shape=(3, config.image_size, config.image_size),
        class_names=class_names,
        group_names=[],
        mean=config.mean_std()[0],
        std=config.mean_std()[1],
        train_augment="crop_flip",
        has_masks=config.masks,
        derived_metrics={"test/bg_gap": ["test_mixed_same/avg_acc", "test_mixed_rand/avg_acc"]},
        extra={
            "folder": str(folder),
            "class_folders": class_folders,
            "split_folders": folders,
            "split_sizes": counts,
            "train_no_fg_files": no_fg_found if config.masks else None,
            "bg_gap": "test/bg_gap: accuracy on test_mixed_same minus accuracy on test_mixed_rand",
        },
    )
    return DatasetBundle(info=info, splits=splits)


def _no_fg_path(root: Path, class_folder: str, path: Path) -> Path | None:
    candidate = root / class_folder / path.name
    return candidate if candidate.is_file() else None


# version 3: training images without a no_fg file get the empty box, no longer the whole image
@cached_dataset("in9", config_class=ImageNet9Config, version=3)
def load_in9(config: ImageNet9Config | dict[str, Any], data_root: Path) -> DatasetBundle:
    """ImageNet-9 with the original training set (``DATA_ROOT/bg_challenge``, or ``config.root``)."""
    return _load("in9", config, data_root)


@cached_dataset("in9l", config_class=ImageNet9Config, version=2)
def load_in9l(config: ImageNet9Config | dict[str, Any], data_root: Path) -> DatasetBundle:
    """ImageNet-9 with the large in9l training set (``train/in9l/{train,val}``)."""
    return _load("in9l", config, data_root)
