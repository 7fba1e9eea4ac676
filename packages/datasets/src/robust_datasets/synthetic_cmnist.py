"""synthetic-cmnist: Colored MNIST in the style of LfF (Nam et al. 2020), generated, no download.

Each grey digit (drawn by :mod:`robust_datasets.digits`) is multiplied by one colour. In the
training split the colour is the digit's own (the bias attribute ``b`` equals the label ``y``)
except for ``conflict_pct`` percent of the samples, which get a random other colour; val and
test colours are uniform and independent of the digit. A model that reads the colour instead of
the digit scores high on bias-aligned samples and low on conflicting ones, which is the failure
the debiasing methods address. Groups are ``g = 10 * y + b``.

Option ``version`` picks the defaults: 2 (the calibrated embedded benchmark, DATASETS.md) has
20,000 training images of which 5 % conflict, 100 per digit exactly, and a 10,000-image test
split; 1 keeps the original defaults (10,000, 1 % drawn over the whole set, 2,000) and its
output byte for byte.

Importing this module does not import torch (``robust info`` reads the options); ``load`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robust.api import DatasetConfig
from robust_datasets.cache import load_or_generate

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

NAME = "synthetic-cmnist"
FORMAT_VERSION = 1  # bump whenever the generator's output changes, so old caches are not read

# LfF's colors.th: the mean foreground colour of each digit class, RGB in [0, 1].
COLORS = np.array(
    [
        (0.9837, 0.3125, 0.1686),
        (0.9905, 0.9156, 0.3515),
        (0.6730, 0.4611, 0.5798),
        (0.7833, 0.8316, 0.6013),
        (0.0880, 0.7780, 0.9818),
        (0.3214, 0.9611, 0.4464),
        (0.0246, 0.2357, 0.7587),
        (0.5552, 0.1016, 0.7618),
        (0.2077, 0.3929, 0.0187),
        (0.8337, 0.2024, 0.2669),
    ],
    dtype=np.float32,
)
COLOR_NAMES = ["red", "yellow", "mauve", "sage", "cyan", "green", "blue", "purple", "olive", "crimson"]
CLASS_NAMES = [str(d) for d in range(10)]
GROUP_NAMES = [f"digit{y}_{COLOR_NAMES[b]}" for y in range(10) for b in range(10)]
SPLITS = ("train", "val", "test")


# Defaults of each generator version: version 2 is the calibrated benchmark (DATASETS.md): LfF's
# mildest ratio (5 %) on enough images that every digit has 100 bias-conflicting training images,
# and a test split large enough that the unbiased accuracy is measured to +-0.5 point.
VERSION_DEFAULTS: dict[int, dict[str, float | int]] = {
    1: {"conflict_pct": 1.0, "n_train": 10000, "n_test": 2000},
    2: {"conflict_pct": 5.0, "n_train": 20000, "n_test": 10000},
}


class SyntheticCMNISTConfig(DatasetConfig):
    """Options of synthetic-cmnist."""

    version: Literal[1, 2] = Field(
        1,
        description="1 = the original defaults (default: 10000 train, 1 % conflicting, 2000 test); 2 = the embedded "
        "benchmark (20000 train, 5 %, 10000 test; DATASETS.md). Same generator: a version only sets the defaults "
        "below.",
    )
    conflict_pct: float | None = Field(
        None,
        ge=0,
        lt=100,
        description="Percent of training samples coloured with another digit's colour (bias-conflicting); "
        "LfF uses 0.5, 1, 2 and 5. Default: the version's.",
    )
    color_std: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Std of the per-image Gaussian noise on the class colour (LfF's severity 4: 0.005).",
    )
    n_train: int | None = Field(
        None, ge=1, description="Training images (digits balanced over the 10 classes). Default: the version's."
    )
    n_val: int = Field(2000, ge=1, description="Validation images (colour independent of the digit).")
    n_test: int | None = Field(
        None, ge=1, description="Test images (colour independent of the digit). Default: the version's."
    )
    seed: int = Field(0, ge=0, description="Seed of the generated data; independent of the training seed.")

    @model_validator(mode="after")
    def _version_defaults(self) -> SyntheticCMNISTConfig:
        """Fill the options left unset from the version, so that the cache key and the run config name them."""
        for key, value in VERSION_DEFAULTS[self.version].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self


def conflict_count(n: int, conflict_pct: float) -> int:
    """How many of ``n`` training samples are bias-conflicting: ``round(n * pct / 100)``."""
    return round(n * conflict_pct / 100)


def _conflicting(labels: np.ndarray, conflict_pct: float, version: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the bias-conflicting training samples.

    Version 1 draws them from the whole set; version 2 per digit (``round(n_digit * pct / 100)``
    of each), so that every digit is sure to have its share (100 each at the defaults).
    """
    if version == 1:
        return rng.choice(len(labels), size=conflict_count(len(labels), conflict_pct), replace=False)
    chosen = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        chosen.append(rng.choice(members, size=conflict_count(len(members), conflict_pct), replace=False))
    return np.sort(np.concatenate(chosen))


def generate(config: SyntheticCMNISTConfig) -> dict[str, np.ndarray]:
    """Every split as numpy arrays ``{split}.images`` (uint8 N,3,28,28), ``.labels``, ``.bias``."""
    from robust_datasets.digits import render_digits  # imports torch

    sizes = {"train": int(config.n_train), "val": config.n_val, "test": int(config.n_test)}
    arrays: dict[str, np.ndarray] = {}
    for index, split in enumerate(SPLITS):
        n = sizes[split]
        rng = np.random.default_rng([config.seed, index])  # one stream per split: sizes do not interact
        labels = rng.permutation(np.arange(n) % 10)
        if split == "train":
            bias = labels.copy()
            conflicting = _conflicting(labels, float(config.conflict_pct), config.version, rng)
            bias[conflicting] = (labels[conflicting] + rng.integers(1, 10, size=len(conflicting))) % 10
        else:
            bias = rng.integers(0, 10, size=n)
        grey = render_digits(labels, rng)
        colors = np.clip(COLORS[bias] + rng.normal(0.0, config.color_std, size=(n, 3)).astype(np.float32), 0.0, 1.0)
        images = np.empty((n, 3, *grey.shape[1:]), dtype=np.uint8)
        for channel in range(3):
            images[:, channel] = np.rint(colors[:, channel, None, None] * grey).astype(np.uint8)
        arrays[f"{split}.images"] = images
        arrays[f"{split}.labels"] = labels.astype(np.int64)
        arrays[f"{split}.bias"] = bias.astype(np.int64)
    return arrays


def load(config: SyntheticCMNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """The dataset, generated on first use and cached under ``data_root / "synthetic-cmnist"``."""
    import torch

    from robust.api import ArraySplit, DatasetBundle, DatasetInfo

    if not isinstance(config, SyntheticCMNISTConfig):
        config = SyntheticCMNISTConfig.model_validate(config)
    arrays = load_or_generate(
        Path(data_root) / NAME, NAME, config.model_dump(mode="json"), FORMAT_VERSION, lambda: generate(config)
    )
    splits = {}
    for split in SPLITS:
        labels = torch.from_numpy(arrays[f"{split}.labels"])
        bias = torch.from_numpy(arrays[f"{split}.bias"])
        splits[split] = ArraySplit(
            labels=labels, groups=labels * 10 + bias, bias=bias, images=torch.from_numpy(arrays[f"{split}.images"])
        )
    info = DatasetInfo(
        name=NAME,
        num_classes=10,
        input_shape=(3, 28, 28),
        class_names=list(CLASS_NAMES),
        group_names=list(GROUP_NAMES),
        bias_names=list(COLOR_NAMES),
        # As LfF/DisEnt's Colored MNIST: ToTensor only (inputs in [0, 1]), no augmentation, so that the
        # reference MLP (input / 255) and its learning rates carry over.
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        train_augment="none",
        extra={"conflict_pct": config.conflict_pct},
    )
    return DatasetBundle(info=info, splits=splits)
