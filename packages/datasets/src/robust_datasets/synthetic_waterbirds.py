"""synthetic-waterbirds: Waterbirds (Sagawa et al. 2020) re-created procedurally, no download.

The label is the bird's body plan (landbird 0 / waterbird 1, :mod:`robust_datasets.birds`);
the spurious attribute is the place it is pasted on (land 0 / water 1,
:mod:`robust_datasets.backgrounds`). The background is the easy feature and the shape the harder
one: ERM learns the background and fails on birds in the other habitat. Val and test have half of
each class on each place, so that worst-group accuracy is measured on every group. All counts
scale with ``scale``. Each image comes with its foreground mask and the tight bounding box of
that mask, for methods that use annotations.

Two generator versions (option ``version``; ``LAYOUTS``):

* 2 (default), the calibrated embedded benchmark: every training group has at least 100 images
  (3000 / 200 / 100 / 600), birds large enough to be learnt at 32 px, and a set small enough for a
  2-minute ERM run on 2 CPU cores; calibration in DATASETS.md.
* 1, the original: the real dataset's training counts (3498 / 184 / 56 / 1057), val and test class
  totals, small birds among more clutter, 64 px. Kept byte for byte, for reproducibility.

Importing this module does not import torch (``robust info`` reads the options); ``load`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robust.api import DatasetConfig
from robust_datasets import backgrounds, birds
from robust_datasets.cache import load_or_generate

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

NAME = "synthetic-waterbirds"
FORMAT_VERSION = 1  # bump whenever the generator's output changes, so old caches are not read

CLASS_NAMES = ["landbird", "waterbird"]
PLACE_NAMES = ["land", "water"]
GROUP_NAMES = [f"{bird}_{place}" for bird in CLASS_NAMES for place in PLACE_NAMES]  # g = 2 * y + place
TRAIN_GROUP_COUNTS = (3498, 184, 56, 1057)  # the real Waterbirds training set
VAL_CLASS_COUNTS = (933, 266)  # real val and test class totals; each class is split evenly by place
TEST_CLASS_COUNTS = (4510, 1284)
SPLITS = ("train", "val", "test")
CHUNK = 256  # images generated at once: temporaries stay in the CPU cache


@dataclass(frozen=True)
class Layout:
    """What a generator version draws: its group counts (before ``scale``) and how hard the bird is to see."""

    train_group_counts: tuple[int, int, int, int]
    val_class_counts: tuple[int, int]  # each class split evenly by place
    test_class_counts: tuple[int, int]
    image_size: int  # default side
    min_length: float  # bird body length, fraction of the side
    max_length: float
    max_clutter: int  # bird-coloured blobs per scene
    pixel_noise: float
    neck_range: tuple[float, float] = birds.NECK_RANGE  # waterbird neck lengths


LAYOUTS = {
    # Version 1: the real Waterbirds counts, small birds among clutter, 64 px.
    1: Layout(TRAIN_GROUP_COUNTS, VAL_CLASS_COUNTS, TEST_CLASS_COUNTS, 64, birds.MIN_LENGTH, birds.MAX_LENGTH, 4, 4.0),
    # Version 2 (calibrated, see DATASETS.md): every training group >= 100 (waterbirds on land the rarest,
    # as in the real set), birds large enough to learn at 32 px, duck-like short-necked waterbirds too, and
    # a set small enough for a 2-minute CPU run.
    2: Layout((3000, 200, 100, 600), (600, 400), (2000, 600), 32, 0.3, 0.42, 2, 4.0, (0.15, 0.85)),
}


class SyntheticWaterbirdsConfig(DatasetConfig):
    """Options of synthetic-waterbirds."""

    version: Literal[1, 2] = Field(
        1,
        description="Generator: 1 = the original data (default: real Waterbirds group counts, small birds, 64 px, "
        "what the methods' CPU presets were tuned on); 2 = the embedded benchmark (DATASETS.md; calibration "
        "not finished).",
    )
    scale: float = Field(
        1.0,
        gt=0,
        le=20,
        description="Multiplies every group count (version 1 at 1.0: 4795 train, 1199 val, 5794 test images, as the "
        "real dataset; version 2: 3900 / 1000 / 2600).",
    )
    image_size: int | None = Field(
        None, ge=32, le=256, description="Side of the square images, in pixels (default: 32 for version 2, 64 for 1)."
    )
    seed: int = Field(0, ge=0, description="Seed of the generated data; independent of the training seed.")

    @model_validator(mode="after")
    def _default_size(self) -> SyntheticWaterbirdsConfig:
        """The version's own image size unless one is given, so that the cache key always names a size."""
        if self.image_size is None:
            self.image_size = LAYOUTS[self.version].image_size
        return self


def group_counts(split: str, scale: float, version: int = 2) -> list[int]:
    """Images per group ``[landbird_land, landbird_water, waterbird_land, waterbird_water]``.

    Rounded, and at least 1 per group, so a small ``scale`` still has every group.
    """
    layout = LAYOUTS[version]
    if split == "train":
        return [max(1, round(count * scale)) for count in layout.train_group_counts]
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}")
    counts = []
    for total in layout.val_class_counts if split == "val" else layout.test_class_counts:
        scaled = max(2, round(total * scale))
        counts += [scaled - scaled // 2, scaled // 2]  # land gets the odd one, as 467 / 466 in the real val
    return counts


def generate(config: SyntheticWaterbirdsConfig) -> dict[str, np.ndarray]:
    """Every split as arrays ``{split}.images`` (uint8 N,3,S,S), ``.masks`` (packed bits), ``.labels``, ``.place``."""
    size = int(config.image_size)
    layout = LAYOUTS[config.version]
    arrays: dict[str, np.ndarray] = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([config.seed, index])  # one stream per split
        groups = np.repeat(np.arange(4), group_counts(split, config.scale, config.version))
        groups = groups[rng.permutation(len(groups))]
        labels, place = groups // 2, groups % 2
        images = np.empty((len(groups), 3, size, size), dtype=np.uint8)
        masks = np.empty((len(groups), size, size), dtype=bool)
        for start in range(0, len(groups), CHUNK):
            part = slice(start, start + CHUNK)
            images[part], masks[part] = _render(labels[part], place[part], size, rng, layout)
        arrays[f"{split}.images"] = images
        arrays[f"{split}.masks"] = np.packbits(masks, axis=-1)  # 8x smaller cache file
        arrays[f"{split}.labels"] = labels.astype(np.int64)
        arrays[f"{split}.place"] = place.astype(np.int64)
    return arrays


def _render(
    labels: np.ndarray, place: np.ndarray, size: int, rng: np.random.Generator, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, S, S)`` uint8 and foreground masks ``(n, S, S)`` bool for one chunk."""
    n = len(labels)
    image = np.empty((n, 3, size, size), dtype=np.float32)
    on_water = place == 1
    image[~on_water] = backgrounds.land(int((~on_water).sum()), size, rng)
    image[on_water] = backgrounds.water(int(on_water.sum()), size, rng)
    image = backgrounds.add_clutter(image, birds.PLUMAGE, rng, layout.max_clutter)
    parts = birds.draw_part_maps(labels, rng, size, layout.min_length, layout.max_length, layout.neck_range)
    colors = birds.part_colors(n, rng)  # (n, parts, 3)
    mask = parts > 0
    index, ys, xs = np.nonzero(mask)  # paint only the bird's pixels (a tenth of the image)
    painted = colors[index, parts[index, ys, xs]]  # (pixels, 3)
    for channel in range(3):
        image[index, channel, ys, xs] = painted[:, channel]
    noise = rng.random(size=image.shape, dtype=np.float32)  # uniform: 4x cheaper than Gaussian draws
    image += (noise - 0.5) * (layout.pixel_noise * 12**0.5) + 0.5  # + 0.5: truncation then rounds to nearest
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), mask


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``(N, 4)`` int64 as ``x0, y0, x1, y1`` (end exclusive) around ``(N, H, W)`` masks.

    A mask with no foreground gets the empty box ``0, 0, 0, 0``, as ``imagefiles.mask_bbox`` gives
    (never happens for generated birds).
    """
    _, height, width = masks.shape
    cols, rows = masks.any(axis=1), masks.any(axis=2)
    empty = ~cols.any(axis=1)
    x0 = np.where(empty, 0, cols.argmax(axis=1))
    x1 = np.where(empty, 0, width - cols[:, ::-1].argmax(axis=1))
    y0 = np.where(empty, 0, rows.argmax(axis=1))
    y1 = np.where(empty, 0, height - rows[:, ::-1].argmax(axis=1))
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def load(config: SyntheticWaterbirdsConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """The dataset, generated on first use and cached under ``data_root / "synthetic-waterbirds"``."""
    import torch

    from robust.api import ArraySplit, DatasetBundle, DatasetInfo

    if not isinstance(config, SyntheticWaterbirdsConfig):
        config = SyntheticWaterbirdsConfig.model_validate(config)
    size = int(config.image_size)
    arrays = load_or_generate(
        Path(data_root) / NAME, NAME, config.model_dump(mode="json"), FORMAT_VERSION, lambda: generate(config)
    )
    splits = {}
    for split in SPLITS:
        masks = np.unpackbits(arrays[f"{split}.masks"], axis=-1, count=size).astype(bool)
        labels = torch.from_numpy(arrays[f"{split}.labels"])
        place = torch.from_numpy(arrays[f"{split}.place"])
        splits[split] = ArraySplit(
            labels=labels,
            groups=labels * 2 + place,
            bias=place,
            bboxes=torch.from_numpy(bounding_boxes(masks)),
            images=torch.from_numpy(arrays[f"{split}.images"]),
            masks=torch.from_numpy(masks.astype(np.uint8) * 255)[:, None],
        )
    info = DatasetInfo(
        name=NAME,
        num_classes=2,
        input_shape=(3, size, size),
        class_names=list(CLASS_NAMES),
        group_names=list(GROUP_NAMES),
        bias_names=list(PLACE_NAMES),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        train_augment="flip",
        has_masks=True,
    )
    return DatasetBundle(info=info, splits=splits)
