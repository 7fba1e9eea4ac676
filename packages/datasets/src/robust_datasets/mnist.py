"""mnist and fashion-mnist: the classic 28×28 grey digit (or clothing) images, from the idx files.

Layout (torchvision's raw folder; the ``.gz`` files as downloaded work too)::

    MNIST/raw/train-images-idx3-ubyte      (60,000 images)   or train-images-idx3-ubyte.gz
    MNIST/raw/train-labels-idx1-ubyte
    MNIST/raw/t10k-images-idx3-ubyte       (10,000 images)
    MNIST/raw/t10k-labels-idx1-ubyte
    FashionMNIST/raw/...                   (same four names)

The files may also sit directly in the dataset folder (as unpacked from yann.lecun.com).

The rare-spurious-correlation study (yangarbiter/rare-spurious-correlation) trains on all 60,000
training images and has no validation split. Every run here needs one, so ``val`` is a seeded
random ``n_val`` images held out of the training set (default 5,000, the classic 55k/5k split);
``n_val=0`` keeps all 60,000 for training, as the study does, and evaluates ``val`` on the test
images (so selecting by ``val`` is selecting on test: say so when reporting). Images stay in
[0, 1] without normalisation (mean 0, std 1), as the study feeds them. There is no spurious
attribute here: groups are the classes (worst-group accuracy = worst-class accuracy) and
``bias`` is not set; the study's patterns are added on top by whoever uses the data.

This module does not import torch until ``load``; :func:`read_idx` and :func:`read_mnist` are
numpy only (the Colored MNIST builders reuse them).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from robust.api import DataError, DatasetConfig
from robust_datasets.missing import missing_dataset
from robust_datasets.sources import MNIST_SOURCE

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import DatasetBundle

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class MNISTConfig(DatasetConfig):
    """Options of mnist and fashion-mnist."""

    root: str | None = Field(
        None, description="The dataset's own folder, holding raw/ (default: DATA_ROOT/MNIST or DATA_ROOT/FashionMNIST)."
    )
    n_val: int = Field(
        5000,
        ge=0,
        le=30000,
        description="Training images held out (seeded) as the val split; 0 trains on all 60,000 as the "
        "rare-spurious-correlation study does and evaluates val on the test images.",
    )
    seed: int = Field(0, ge=0, description="Seed of the val hold-out; independent of the training seed.")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (big-endian header, unsigned-byte data; gzip accepted) as a uint8 array.

    ``magic`` is the expected magic number (2051 images, 2049 labels); anything else, or a file
    shorter than its header promises, is a ``DataError`` naming the file.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read the idx file {str(path)!r} ({exc}); download it again.") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise DataError(
            f"{str(path)!r} is not an idx file of the expected kind: magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}). The file is corrupt or misnamed; download it again."
        )
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    size = int(np.prod(shape))
    if len(raw) - offset != size:
        raise DataError(
            f"The idx file {str(path)!r} is truncated or padded: its header says {shape} = {size} bytes of data, "
            f"the file has {len(raw) - offset}. Download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset).reshape(shape).copy()  # writable


def find_idx(folder: Path, name: str) -> Path | None:
    """``name`` (or ``name.gz``) in ``folder/raw`` or ``folder``; None when absent."""
    for base in (folder / "raw", folder):
        for candidate in (base / name, base / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_mnist(folder: Path, dataset: str = "mnist") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 (N, 28, 28), labels int64 (N,)), "test": ...}`` from ``folder``.

    ``dataset`` names the dataset in the error raised when a file is missing.
    """
    arrays = {}
    for split, (images_name, labels_name) in FILES.items():
        paths = [find_idx(folder, images_name), find_idx(folder, labels_name)]
        if None in paths:
            expected = [f"raw/{n}[.gz]" for pair in FILES.values() for n in pair]
            absent = [n for n, p in zip((images_name, labels_name), paths, strict=True) if p is None]
            raise missing_dataset(
                dataset,
                folder,
                expected,
                MNIST_SOURCE,
                detail=f"Not found (in raw/ or the folder): {', '.join(absent)}.",
            )
        images = read_idx(paths[0], IMAGES_MAGIC)
        labels = read_idx(paths[1], LABELS_MAGIC).astype(np.int64)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{str(paths[0])!r} holds images of size {images.shape[1:]}; expected 28×28.")
        if len(images) != len(labels):
            raise DataError(
                f"{str(paths[0])!r} holds {len(images)} images but {str(paths[1])!r} {len(labels)} labels; "
                "the two files come from different downloads."
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{str(paths[1])!r} has label {labels.max()}; MNIST labels are 0-9.")
        arrays[split] = (images, labels)
    return arrays


def holdout(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a seeded random hold-out of ``n_val`` of ``n``; both sorted."""
    if n_val >= n:
        raise DataError(f"n_val = {n_val} leaves no training images out of {n}; lower it.")
    val = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train, val


def _load(name: str, class_names: list[str], config: MNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    import torch

    from robust.api import ArraySplit, DatasetBundle, DatasetInfo

    if not isinstance(config, MNISTConfig):
        config = MNISTConfig.model_validate(config)
    folder = Path(config.root) if config.root else Path(data_root) / FOLDERS[name]
    arrays = read_mnist(folder, name)
    train_images, train_labels = arrays["train"]
    train_idx, val_idx = holdout(len(train_labels), config.n_val, config.seed)

    def split(images: np.ndarray, labels: np.ndarray) -> ArraySplit:
        y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        x = torch.from_numpy(np.ascontiguousarray(images))[:, None]  # (N, 1, 28, 28)
        return ArraySplit(labels=y, groups=y.clone(), images=x)

    test = split(*arrays["test"])
    splits = {
        "train": split(train_images[train_idx], train_labels[train_idx]),
        "val": split(train_images[val_idx], train_labels[val_idx]) if config.n_val else test,
        "test": test,
    }
    info = DatasetInfo(
        name=name,
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=list(class_names),
        group_names=list(class_names),
        mean=(0.0,),
        std=(1.0,),
        train_augment="none",
        extra={"n_val": config.n_val, "val_is_test": config.n_val == 0, "folder": str(folder)},
    )
    return DatasetBundle(info=info, splits=splits)


def load_mnist(config: MNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """MNIST from ``DATA_ROOT/MNIST`` (or ``config.root``)."""
    return _load("mnist", MNIST_CLASSES, config, data_root)


def load_fashion_mnist(config: MNISTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Fashion-MNIST from ``DATA_ROOT/FashionMNIST`` (or ``config.root``)."""
    return _load("fashion-mnist", FASHION_CLASSES, config, data_root)
