"""Options every on-disk image dataset shares. Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robust.api import DatasetConfig


class ImageDatasetConfig(DatasetConfig):
    """Where the files are, the size images are decoded to, and whether the split is held in memory."""

    root: str | None = Field(
        None, description="The dataset's own folder (default: DATA_ROOT/<dataset folder>, see `robust info`)."
    )
    image_size: int = Field(224, ge=8, le=1024, description="Side of the square images the model sees, in pixels.")
    in_memory: Literal["auto", "yes", "no"] = Field(
        "auto", description="Decode every image once and hold the split in memory (auto: when under memory_limit_gb)."
    )
    memory_limit_gb: float = Field(4.0, gt=0, description="Largest decoded split held in memory under in_memory=auto.")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: name -> (mean, std) per channel: ImageNet's statistics, or BiT's (mean = std = 0.5) that CFGen's reference uses.
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "bit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


class NormalizedImageConfig(ImageDatasetConfig):
    """An image dataset whose input normalisation a paper's setting may choose (CFGen's BiT models: 0.5)."""

    normalization: Literal["imagenet", "bit"] = Field(
        "imagenet",
        description="Input normalisation: imagenet = ImageNet mean/std; bit = mean = std = 0.5 (BiT's, which CFGen's "
        "reference uses, so that pixel values span [-1, 1]).",
    )

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return NORMALIZATIONS[self.normalization]
