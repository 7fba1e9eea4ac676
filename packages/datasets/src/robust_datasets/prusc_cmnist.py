"""colored-mnist: the IRM-style Colored MNIST that PruSC's invariant-learning experiments use.

Built from the MNIST idx files (:mod:`robust_datasets.mnist`, folder ``DATA_ROOT/MNIST``), the
recipe of Arjovsky et al.'s IRM script, which PruSC's ``invariant_learning/`` code follows:

1. binary label ``y = 1[digit < 5]`` (class 1 = digits 0-4, class 0 = digits 5-9);
2. label noise: ``y`` is flipped with probability ``label_noise`` (IRM and PruSC: 0.25);
3. colour ``c = y XOR Bernoulli(e)``: with probability ``e`` the colour disagrees with the
   (noisy) label. ``e = spurious_ratio`` on train and val (PruSC's default files are named
   ``train15_noise25``: e = 0.15, noise 0.25), ``e = test_spurious_ratio`` on test (IRM: 0.9,
   so colour is anti-correlated there; PruSC's random-environment baseline uses 0.7);
4. images downsampled 28 → 14 by taking every second pixel, as two channels (red, green) with
   the channel of the other colour zeroed. ``channels=3`` gives RGB with blue zero instead.

Splits: MNIST train is shuffled with ``seed``; the last ``n_val`` images (default 10,000, IRM's
own 50k / 10k split of MNIST train) are val, with the training colour ratio; the rest is train;
test is MNIST's 10,000 test images. Groups ``g = 2·y + c``; ``bias = c`` (red 0, green 1), so
"aligned" means ``y == c``. PruSC's generator is not published: the sizes, the val split and
that one training ratio (instead of IRM's two training environments) are our assumptions.
Pixel values stay in [0, 1] without normalisation (mean 0, std 1), as IRM feeds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from robust.api import DataError, DatasetConfig
from robust_datasets.mnist import read_mnist

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

NAME = "colored-mnist"
CLASS_NAMES = ["digit5-9", "digit0-4"]  # y = 1[digit < 5]
COLOR_NAMES = ["red", "green"]
GROUP_NAMES = [f"{cls}_{color}" for cls in CLASS_NAMES for color in COLOR_NAMES]  # g = 2 * y + c


class PruSCColoredMNISTConfig(DatasetConfig):
    """Options of colored-mnist."""

    root: str | None = Field(None, description="The MNIST folder holding raw/ (default: DATA_ROOT/MNIST).")
    spurious_ratio: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Probability that a train/val image's colour disagrees with its label (IRM's e; PruSC: 0.15).",
    )
    test_spurious_ratio: float = Field(
        0.9, ge=0, le=1, description="The same on the test split (IRM: 0.9; PruSC's random-IRM baseline: 0.7)."
    )
    label_noise: float = Field(0.25, ge=0, lt=0.5, description="Probability that a label is flipped (IRM: 0.25).")
    noisy_eval: bool = Field(
        True, description="Flip val/test labels too, as IRM does (accuracy is then capped near 1 - label_noise)."
    )
    n_val: int = Field(10000, ge=1, le=30000, description="MNIST training images held out as val.")
    image_size: Literal[14, 28] = Field(14, description="14: every second pixel, as IRM; 28: full resolution.")
    channels: Literal[2, 3] = Field(2, description="2: red and green planes, as IRM; 3: RGB with blue zero.")
    seed: int = Field(0, ge=0, description="Seed of the shuffle, noise and colours; independent of the training seed.")


def colorize(
    digits: np.ndarray, images: np.ndarray, ratio: float, noise: float, rng: np.random.Generator, channels: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 (N, channels, H, W), labels, colours)`` from digits and grey images ``(N, H, W)``."""
    n = len(digits)
    labels = (digits < 5).astype(np.int64)
    labels ^= (rng.random(n) < noise).astype(np.int64)
    colors = labels ^ (rng.random(n) < ratio).astype(np.int64)
    out = np.zeros((n, channels, *images.shape[1:]), dtype=np.uint8)
    out[np.arange(n), colors] = images  # channel 0 = red, 1 = green; the other stays zero
    return out, labels, colors


def load(config: PruSCColoredMNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Colored MNIST built from ``DATA_ROOT/MNIST`` (or ``config.root``); deterministic given ``seed``."""
    import torch

    from robust.api import ArraySplit, DatasetBundle, DatasetInfo

    if not isinstance(config, PruSCColoredMNISTConfig):
        config = PruSCColoredMNISTConfig.model_validate(config)
    folder = Path(config.root) if config.root else Path(data_root) / "MNIST"
    arrays = read_mnist(folder, NAME)
    train_images, train_digits = arrays["train"]
    test_images, test_digits = arrays["test"]
    order = np.random.default_rng([config.seed, 0]).permutation(len(train_digits))
    n_train = len(order) - config.n_val
    if n_train < 1:
        raise DataError(f"n_val = {config.n_val} leaves no training images out of {len(order)}; lower it.")
    sources = {
        "train": (train_digits[order[:n_train]], train_images[order[:n_train]], config.spurious_ratio),
        "val": (train_digits[order[n_train:]], train_images[order[n_train:]], config.spurious_ratio),
        "test": (test_digits, test_images, config.test_spurious_ratio),
    }
    step = 2 if config.image_size == 14 else 1
    splits = {}
    for index, (split, (digits, images, ratio)) in enumerate(sources.items()):
        rng = np.random.default_rng([config.seed, index + 1])
        noise = config.label_noise if split == "train" or config.noisy_eval else 0.0
        x, y, c = colorize(digits, images[:, ::step, ::step], ratio, noise, rng, config.channels)
        labels, colors = torch.from_numpy(y), torch.from_numpy(c)
        splits[split] = ArraySplit(labels=labels, groups=2 * labels + colors, bias=colors, images=torch.from_numpy(x))
    info = DatasetInfo(
        name=NAME,
        num_classes=2,
        input_shape=(config.channels, config.image_size, config.image_size),
        class_names=list(CLASS_NAMES),
        group_names=list(GROUP_NAMES),
        bias_names=list(COLOR_NAMES),
        mean=(0.0,) * config.channels,
        std=(1.0,) * config.channels,
        train_augment="none",
        extra={
            "spurious_ratio": config.spurious_ratio,
            "test_spurious_ratio": config.test_spurious_ratio,
            "label_noise": config.label_noise,
        },
    )
    return DatasetBundle(info=info, splits=splits)
