"""waterbirds: CUB birds pasted on Places backgrounds (Sagawa et al. 2020), from the group_DRO release.

Layout (``DATA_ROOT/waterbird_complete95_forest2water2``, or ``dataset.root``)::

    waterbird_complete95_forest2water2/metadata.csv
    waterbird_complete95_forest2water2/NNN.Species_Name/Species_Name_XXXX_YYYYY.jpg

``metadata.csv`` (group_DRO, WILDS): header ``img_id,img_filename,y,split,place,place_filename``
(extra columns are ignored; ``img_filename``, ``y``, ``split`` and ``place`` are required), ``y``
1 = waterbird, ``place`` 1 = water, ``split`` 0 / 1 / 2 = train / val / test. SubpopBench's
converted ``metadata_waterbirds.csv`` (``id,filename,split,y,a``, ``a`` = place) is read instead
when there is no ``metadata.csv``, from the dataset folder or its parent (where SubpopBench
keeps it); the folder ``DATA_ROOT/waterbirds/waterbird_complete95_forest2water2`` (SubpopBench's
place) is found too. Samples keep the metadata's row order.

Groups ``g = 2·y + place`` (landbird_land, landbird_water, waterbird_land, waterbird_water);
``bias`` = place, so "aligned" means ``y == place``. With ``flipped_test`` the test set is also
evaluated as ``test_original`` (``y == place``) and ``test_flipped`` (``y != place``), as Chang et
al. (CFGen) report it.

Images: group_DRO evaluates ``Resize((256, 256))`` then ``CenterCrop(224)``, i.e. the central
87.5 % of the width and of the height, resized to 224: :class:`FractionCrop` does exactly that in
one resampling (``crop_fraction``, 1 = plain resize: CFGen's geometry, which resizes the whole
image to 224 for evaluation and crops its training images from the whole image resized to 256).
ImageNet statistics, or ``normalization=bit`` (mean = std = 0.5, CFGen's). Training augmentation
(``train_augment``, default ``crop_flip``: pad-and-crop plus flip on the device) stands in for the
RandomResizedCrop(scale 0.7-1) plus flip of group_DRO's ``--augment_data``, PruSC and CFGen;
group_DRO's default runs use none.

Masks (``masks=true``, training split only, as CFGen): the CUB-200-2011 segmentation PNG at the
image's relative path with ``.png``, under ``masks_dir``: by default the ``segmentations`` folder
inside the dataset folder, else beside it (CFGen's ``datasets/waterbird/segmentations``, next to
``waterbird_complete95_forest2water2``). We follow Chang et al.: foreground = pixels whose three
channels are all non-zero in the stored PNG; that binary mask is resized with the image and any
non-zero pixel counts (CFGen's ceil after the bilinear resize: slightly dilated). Boxes are the
tight box of the resized mask: computed while decoding the split into memory, or, when the
split streams (``in_memory=no``, as ``robust data verify`` and ``robust data cache`` build it),
up front from the masks alone (a pass over the PNGs).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from robust.api import DataError
from robust_datasets.csvfiles import read_csv
from robust_datasets.h5cache import cached_dataset
from robust_datasets.imagefiles import FractionCrop, ImageFileSplit, Resize, decode_image, in_memory, mask_bbox
from robust_datasets.missing import missing_dataset
from robust_datasets.options import NormalizedImageConfig
from robust_datasets.sources import WATERBIRDS_SOURCE

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

    from robust.api import DatasetBundle, Split

NAME = "waterbirds"
FOLDER = "waterbird_complete95_forest2water2"
METADATA = "metadata.csv"
SUBPOP_METADATA = "metadata_waterbirds.csv"
HEADER = ("img_id", "img_filename", "y", "split", "place", "place_filename")
SUBPOP_HEADER = ("id", "filename", "split", "y", "a")
# The columns each variant must have: our field -> its column.
COLUMNS = {
    "group_DRO": {"filename": "img_filename", "y": "y", "split": "split", "place": "place"},
    "SubpopBench": {"filename": "filename", "y": "y", "split": "split", "place": "a"},
}
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
CLASS_NAMES = ["landbird", "waterbird"]
PLACE_NAMES = ["land", "water"]
GROUP_NAMES = [f"{bird}_{place}" for bird in CLASS_NAMES for place in PLACE_NAMES]  # g = 2 * y + place
MASKS_FOLDER = "segmentations"
MASK_SOURCE = "the CUB-200-2011 segmentations (segmentations.tgz, www.vision.caltech.edu/datasets/cub_200_2011)"


class WaterbirdsConfig(NormalizedImageConfig):
    """Options of waterbirds."""

    crop_fraction: float = Field(
        0.875,
        gt=0,
        le=1,
        description="Central fraction of the width and height kept before resizing (0.875: group_DRO's "
        "resize to 256x256 then centre crop 224; 1: plain resize).",
    )
    train_augment: Literal["none", "flip", "crop_flip"] = Field(
        "crop_flip",
        description="Training augmentation on the device (crop_flip stands in for RandomResizedCrop + flip; "
        "group_DRO's default runs use none).",
    )
    flipped_test: bool = Field(
        False, description="Also evaluate test_original (y == place) and test_flipped (y != place), as Chang et al."
    )
    masks: bool = Field(
        False,
        description="Foreground masks and boxes for the training split from the CUB-200-2011 segmentations "
        f"(found at masks_dir; default {MASKS_FOLDER}/ inside the dataset folder, else beside it).",
    )
    masks_dir: str | None = Field(
        None,
        description="Folder of the CUB segmentation PNGs (same relative path as each image, .png), when not at the "
        "default place; relative paths start at the dataset folder. Giving it also turns masks on.",
    )


class _Native(Resize):
    """Leaves the image at its stored size (the mask rule reads the PNG's own pixels)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image


NATIVE = _Native(size=1)


class MaskedImageSplit(ImageFileSplit):
    """Images with a CUB segmentation each: foreground = all three channels non-zero, then resized."""

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        import torch

        path = self.paths[index]
        original = decode_image(path, NATIVE)
        image = np.array(self.resize(Image.fromarray(original)), dtype=np.uint8)
        mask = self.mask(index, original.shape[:2])
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)[None]

    def mask(self, index: int, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The resized mask ``(S, S)`` uint8 0/255; ``image_shape`` (H, W) of the stored image is checked."""
        mask_path = self.mask_paths[index] if self.mask_paths is not None else None
        side = self.resize.size
        if mask_path is None:  # no segmentation: no foreground known
            return np.zeros((side, side), dtype=np.uint8)
        segmentation = decode_image(Path(mask_path), NATIVE)
        if image_shape is not None and segmentation.shape[:2] != tuple(image_shape):
            raise DataError(
                f"Mask {str(mask_path)!r} is {segmentation.shape[1]}x{segmentation.shape[0]} but its image "
                f"{str(self.paths[index])!r} is {image_shape[1]}x{image_shape[0]}; each CUB segmentation must "
                "match its image."
            )
        foreground = (segmentation > 0).all(axis=2).astype(np.uint8) * 255
        small = np.array(self.resize(Image.fromarray(foreground, mode="L")), dtype=np.uint8)
        return np.where(small > 0, 255, 0).astype(np.uint8)

    def compute_bboxes(self, threads: int = 8) -> Tensor:
        """Tight boxes of every resized mask, decoding the masks only (for a split that streams)."""
        import torch

        with ThreadPoolExecutor(max_workers=threads) as pool:
            boxes = list(pool.map(lambda i: mask_bbox(self.mask(i)), range(len(self))))
        return torch.tensor(boxes, dtype=torch.long).reshape(len(self), 4)


@dataclass
class Metadata:
    """The parsed metadata file: one entry per image, in file order."""

    path: Path
    variant: str
    filenames: list[str]
    y: np.ndarray
    split: np.ndarray
    place: np.ndarray


def find_folder(config: WaterbirdsConfig, data_root: Path) -> Path:
    """``config.root``, else ``DATA_ROOT/<FOLDER>``, else SubpopBench's ``DATA_ROOT/waterbirds/<FOLDER>``."""
    if config.root:
        return Path(config.root)
    default = Path(data_root) / FOLDER
    subpop = Path(data_root) / "waterbirds" / FOLDER
    return subpop if not default.exists() and subpop.is_dir() else default


def find_metadata(folder: Path) -> tuple[Path, str]:
    """The metadata file and its variant (group_DRO's ``metadata.csv`` first, then SubpopBench's)."""
    for path, variant in (
        (folder / METADATA, "group_DRO"),
        (folder / SUBPOP_METADATA, "SubpopBench"),
        (folder.parent / SUBPOP_METADATA, "SubpopBench"),
    ):
        if path.is_file():
            return path, variant
    raise missing_dataset(
        NAME,
        folder,
        [METADATA, f"NNN.Species_Name/*.jpg (or SubpopBench's {SUBPOP_METADATA} here or in the parent folder)"],
        WATERBIRDS_SOURCE,
        detail=f"Not found: {METADATA}.",
    )


def code_column(values: list[str], path: Path, column: str, allowed: tuple[int, ...]) -> np.ndarray:
    """Integer codes of one column (``1`` and ``1.0`` both read as 1); anything else is a DataError."""
    try:
        numbers = np.array([v.strip() for v in values], dtype=str).astype(np.float64)
    except ValueError:  # some cell is not a number: find it the slow way
        numbers = np.array([_number(v) for v in values], dtype=np.float64)
    good = np.isin(numbers, allowed)
    if not good.all():
        bad = int(np.flatnonzero(~good)[0])
        raise DataError(
            f"{str(path)!r}, data row {bad + 1}: column {column!r} is {values[bad]!r}; expected one of "
            f"{', '.join(map(str, allowed))}."
        )
    return numbers.astype(np.int64)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_metadata(path: Path, variant: str) -> Metadata:
    """Parse and check ``path`` (``variant`` = group_DRO or SubpopBench)."""
    header, rows = read_csv(path)
    columns = COLUMNS[variant]
    missing = [c for c in columns.values() if c not in header]
    if missing:
        expected = HEADER if variant == "group_DRO" else SUBPOP_HEADER
        raise DataError(
            f"{str(path)!r} has the header {','.join(header) or '(empty)'} but a Waterbirds metadata file needs "
            f"{','.join(expected)} (missing: {', '.join(missing)}; extra columns are ignored)."
        )
    if not rows:
        raise DataError(f"{str(path)!r} has a header but no rows; the Waterbirds metadata lists 11,788 images.")
    index = {field: header.index(column) for field, column in columns.items()}
    width = max(index.values()) + 1
    short = next((i for i, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise DataError(
            f"{str(path)!r}, data row {short + 1} has {len(rows[short])} fields but the header has {len(header)}."
        )
    cells = {field: [row[i] for row in rows] for field, i in index.items()}
    return Metadata(
        path=path,
        variant=variant,
        filenames=[name.strip() for name in cells["filename"]],
        y=code_column(cells["y"], path, columns["y"], (0, 1)),
        split=code_column(cells["split"], path, columns["split"], (0, 1, 2)),
        place=code_column(cells["place"], path, columns["place"], (0, 1)),
    )


def masks_root(config: WaterbirdsConfig, folder: Path) -> Path:
    """Where the segmentations are: ``masks_dir``, else ``segmentations`` inside, else beside, the dataset folder."""
    if config.masks_dir is not None:
        root = Path(config.masks_dir)
        root = root if root.is_absolute() else folder / root
        if not root.is_dir():
            raise missing_dataset(
                f"{NAME} masks",
                root,
                ["NNN.Species_Name/<image name>.png for every training image"],
                MASK_SOURCE,
                detail="masks_dir is not a folder.",
            )
        return root
    candidates = [folder / MASKS_FOLDER, folder.parent / MASKS_FOLDER]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        raise DataError(
            f"waterbirds: masks=true needs {MASK_SOURCE}, and neither {str(candidates[0])!r} (inside the dataset "
            f"folder) nor {str(candidates[1])!r} (beside it, where CFGen's fetch_waterbird.sh puts it) is a folder. "
            "Extract segmentations.tgz there (it holds NNN.Species_Name/<image name>.png, the same relative paths "
            "as the Waterbirds images), or give its place with --set dataset.masks_dir=DIR."
        )
    return found


def mask_paths(root: Path, filenames: list[str]) -> list[Path]:
    """The segmentation of each image under ``root``; a missing file is a DataError."""
    paths = [root / Path(name).with_suffix(".png") for name in filenames]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        shown = ", ".join(repr(str(p)) for p in absent[:3])
        raise DataError(
            f"{len(absent)} of {len(paths)} training images have no segmentation under {str(root)!r} (e.g. {shown}). "
            f"The masks folder must hold {MASK_SOURCE} at the images' relative paths, with .png."
        )
    return paths


def subset(split: Split, indices: np.ndarray) -> Split:
    """The samples at ``indices`` of an in-memory or streamed split."""
    import torch

    idx = torch.from_numpy(indices)
    if isinstance(split, ImageFileSplit):
        return ImageFileSplit(
            [split.paths[i] for i in indices.tolist()],
            split.labels[idx],
            split.resize,
            groups=split.groups[idx] if split.groups is not None else None,
            bias=split.bias[idx] if split.bias is not None else None,
        )
    return split.subset(idx)  # type: ignore[attr-defined]


def build(config: WaterbirdsConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Waterbirds from its image folder and metadata file."""
    import torch

    from robust.api import DatasetBundle, DatasetInfo

    if not isinstance(config, WaterbirdsConfig):
        config = WaterbirdsConfig.model_validate(config)
    folder = find_folder(config, data_root)
    meta = read_metadata(*find_metadata(folder))
    resize = FractionCrop(config.image_size, fraction=config.crop_fraction)
    use_masks = config.masks or config.masks_dir is not None
    segmentations = masks_root(config, folder) if use_masks else None
    splits: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for code, split in SPLIT_CODES.items():
        rows = np.flatnonzero(meta.split == code)
        if rows.size == 0:
            raise DataError(
                f"{str(meta.path)!r} has no rows with split = {code} ({split}); Waterbirds needs all three."
            )
        labels = torch.from_numpy(meta.y[rows])
        place = torch.from_numpy(meta.place[rows])
        paths = [folder / meta.filenames[i] for i in rows.tolist()]
        kwargs = {"groups": labels * 2 + place, "bias": place}
        if split == "train" and segmentations is not None:
            masks = mask_paths(segmentations, [meta.filenames[i] for i in rows.tolist()])
            stream: ImageFileSplit = MaskedImageSplit(paths, labels, resize, mask_paths=masks, **kwargs)
            limit = config.memory_limit_gb * 2**30
            if config.in_memory == "no" or (config.in_memory == "auto" and stream.decoded_nbytes > limit):
                stream.bboxes = stream.compute_bboxes()  # it will stream: boxes cannot come from .load()
        else:
            stream = ImageFileSplit(paths, labels, resize, **kwargs)
        splits[split] = in_memory(stream, config.in_memory, config.memory_limit_gb)
        sizes[split] = int(rows.size)
    if config.flipped_test:
        test_rows = np.flatnonzero(meta.split == 2)
        same = meta.y[test_rows] == meta.place[test_rows]
        splits["test_original"] = subset(splits["test"], np.flatnonzero(same))
        splits["test_flipped"] = subset(splits["test"], np.flatnonzero(~same))
        sizes["test_original"], sizes["test_flipped"] = int(same.sum()), int((~same).sum())
    info = DatasetInfo(
        name=NAME,
        num_classes=2,
        input_shape=(3, config.image_size, config.image_size),
        class_names=list(CLASS_NAMES),
        group_names=list(GROUP_NAMES),
        bias_names=list(PLACE_NAMES),
        mean=config.mean_std()[0],
        std=config.mean_std()[1],
        train_augment=config.train_augment,
        has_masks=segmentations is not None,
        extra={
            "folder": str(folder),
            "metadata": str(meta.path),
            "metadata_variant": meta.variant,
            "split_sizes": sizes,
            "crop_fraction": config.crop_fraction,
            "masks_dir": str(segmentations) if segmentations is not None else None,
        },
    )
    return DatasetBundle(info=info, splits=splits)


load = cached_dataset(NAME, config_class=WaterbirdsConfig)(build)
