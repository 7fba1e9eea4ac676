"""CIFAR-10/100 from the python pickles, plus their long-tailed and noisy-label versions.

Layout (the "python version" from www.cs.toronto.edu/~kriz/cifar.html, as extracted)::

    cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta

Each file is a pickled dict, read with a restricted unpickler (:mod:`robust_datasets.safe_pickle`:
only dicts, lists, str, bytes, numbers and numpy arrays; latin-1 strings; byte-string keys are
accepted too): ``data`` uint8 ``(N, 3072)`` = 1024 R, 1024 G, 1024 B values of a row-major
32×32 image, so ``reshape(N, 3, 32, 32)`` is already our ``(N, C, H, W)``; ``labels``
(CIFAR-10) or ``fine_labels`` and ``coarse_labels`` (CIFAR-100); class names in
``batches.meta["label_names"]`` / ``meta["fine_label_names"]``. We parse the pickles ourselves:
torchvision's classes check every file's MD5 and refuse anything but the original files.

Datasets (all evaluate on the clean, balanced 10,000-image test set; groups are the classes, so
worst-group accuracy is worst-class accuracy; no bias attribute):

- ``cifar10`` / ``cifar100``: ``val`` is a seeded, class-stratified ``val_size`` images held out
  of the 50,000 training images (CIFAR has no validation split; default 5,000);
  ``val_size=0`` trains on all 50,000 and evaluates ``val`` on the test set.
- ``cifar10-lt`` / ``cifar100-lt``: the exponential long tail of :mod:`robust_datasets.long_tail_noise`
  (``imb_factor`` = n_max / n_min), under ``recipe`` (whose code builds the data):
  ``mwnet`` (Meta-Weight-Net: ``num_meta`` = 10 clean images per class go to the meta set first,
  ``n_max = (50000 − 10·C) / C`` = 4990 / 490), ``clp`` (CLP's ``CIFAR_process.py``: 1000 meta
  images in all, ``n_max = ⌊(50000 − 1000) / C⌋`` = 4900 / 490, and the list of class counts
  SHUFFLED with the same seeded stream, so the head class is random) or ``ldam`` (LDAM-DRW: no
  meta set, ``n_max`` = 5000 / 500).
- ``cifar10-noisy`` / ``cifar100-noisy``: ``num_meta`` clean images per class (default 1000 in
  all) go to the meta set, never corrupted; every other training label is resampled from the
  ``corruption_type`` transition matrix (``unif``, ``flip``, ``flip2``, ``hierarchical`` for
  CIFAR-100). ``recipe`` ``mwnet`` draws the flip pattern from its own generator seeded with 1;
  ``clp`` reproduces CLP's code (imbalance factor 1, one stream for the split, the count
  shuffle, the flip pattern and the labels).

The clean balanced meta set is ``aux["meta"]``. These papers have no validation split
(Meta-Weight-Net reports the last test accuracy, CLP the best one). Here ``val`` is, by
``val_source``: ``meta`` = a copy of the meta set (clean and balanced, but the meta-learner also
fits it), or ``test`` = the test set (``info.extra["val_is_test"]``: selecting by val is then
selecting on test, which reproduces the papers' best-test numbers). Default: ``meta`` when there
is a meta set. For the noisy datasets the training split's labels are the noisy ones (and so are
its groups); the clean ones are ``info.extra["clean_train_labels"]``.

Images are 3×32×32 uint8, normalised with CLP's / Meta-Weight-Net's CIFAR mean and std, trained
with pad-and-crop plus flip. This module imports torch only in the loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import AliasChoices, Field

from robust.api import ConfigError, DataError, DatasetConfig
from robust_datasets import long_tail_noise as protocols
from robust_datasets.missing import missing_dataset
from robust_datasets.safe_pickle import load_pickle
from robust_datasets.sources import CIFAR_SOURCE

if TYPE_CHECKING:  # pragma: no cover - typing only
    from robust.api import ArraySplit, DatasetBundle

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}
LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
NAME_KEYS = {"cifar10": "label_names", "cifar100": "fine_label_names"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# CLP / Meta-Weight-Net normalisation: [125.3, 123.0, 113.9] / 255 and [63.0, 62.1, 66.7] / 255
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
META_TOTAL = 1000  # Meta-Weight-Net's noisy meta set and CLP's num_meta_total


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


class _CIFARBase(DatasetConfig):
    root: str | None = Field(
        None,
        description="The folder holding the pickles (default: DATA_ROOT/cifar-10-batches-py or "
        "DATA_ROOT/cifar-100-python).",
    )


class CIFARConfig(_CIFARBase):
    """Options of cifar10 and cifar100."""

    val_size: int = Field(
        5000,
        ge=0,
        le=25000,
        description="Training images held out (seeded, the same number per class) as the val split; 0 trains on "
        "all 50,000 and evaluates val on the test set.",
    )
    seed: int = Field(0, ge=0, description="Seed of the val hold-out; independent of the training seed.")


class CIFARLTConfig(_CIFARBase):
    """Options of cifar10-lt and cifar100-lt."""

    imb_factor: float = Field(
        100.0, ge=1.0, description="Imbalance ratio n_max / n_min (10, 50, 100, 200...; not 1/ratio)."
    )
    imb_type: Literal["exp", "step"] = Field(
        "exp", description="exp: n_i = int(n_max * ratio^(-i/(C-1))); step: half the classes n_max, half n_max/ratio."
    )
    recipe: Literal["mwnet", "clp", "ldam"] = Field(
        "mwnet",
        validation_alias=AliasChoices("recipe", "protocol"),  # its name before 2026-12 (configs of older runs)
        description="Whose code builds the data. mwnet: meta set of 10/class first, n_max = (50000 - 10C)/C; clp: CLP's CIFAR_process.py "
        "(1000 meta images in all, n_max = floor(49000/C), class order shuffled); ldam: no meta set, n_max = 50000/C.",
    )
    num_meta: int | None = Field(
        None, ge=0, description="Clean meta images per class (default: mwnet 10, clp 1000/C, ldam 0)."
    )
    shuffle_class_order: bool | None = Field(
        None,
        description="Shuffle which class gets which count with the seeded stream (default: on for clp, as its "
        "code does; off otherwise, class 0 the head).",
    )
    val_source: Literal["auto", "meta", "test"] = Field(
        "auto",
        description="val = a copy of the clean meta set, or the test set (papers' best-test selection); auto: "
        "meta when there is one.",
    )
    seed: int = Field(1, ge=0, description="Seed of the subsampling (and meta set); CLP's default is 1.")


class CIFARNoisyConfig(_CIFARBase):
    """Options of cifar10-noisy and cifar100-noisy."""

    corruption_type: Literal["unif", "flip", "flip2", "hierarchical"] = Field(
        "unif",
        description="unif: uniform over all classes (true one included); flip: r to one random other class; "
        "flip2: r/2 to each of two; hierarchical: spread over the superclass (CIFAR-100 only).",
    )
    corruption_ratio: float = Field(0.4, ge=0.0, le=1.0, description="Noise rate r of the transition matrix.")
    recipe: Literal["mwnet", "clp"] = Field(
        "mwnet",
        validation_alias=AliasChoices("recipe", "protocol"),  # its name before 2026-12 (configs of older runs)
        description="Whose code builds the data. mwnet: flip pattern from its own generator seeded with 1; clp: CLP's CIFAR_process.py "
        "(one seeded stream for the meta split, the flip pattern and the labels).",
    )
    num_meta: int | None = Field(
        None, ge=0, description="Clean meta images per class, never corrupted (default 1000 in all: 100 / 10)."
    )
    val_source: Literal["meta", "test"] = Field(
        "meta", description="val = a copy of the clean meta set, or the test set (papers' best-test selection)."
    )
    seed: int = Field(1, ge=0, description="Seed of the meta split and the label noise (Meta-Weight-Net's default 1).")


# ---------------------------------------------------------------------------------------------
# Reading the pickles
# ---------------------------------------------------------------------------------------------


@dataclass
class CIFARArrays:
    """A CIFAR release as arrays: images uint8 ``(N, 3, 32, 32)``, labels int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    superclasses: np.ndarray | None = None  # CIFAR-100: coarse class of each fine class
    superclass_names: list[str] | None = None


def unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys; a DataError naming the file when it is not one.

    Read with :func:`robust_datasets.safe_pickle.load_pickle`: a data file must not run code.
    """
    content = load_pickle(path, "CIFAR file", "Download and extract the python version again.")
    if not isinstance(content, dict):
        raise DataError(
            f"{str(path)!r} holds a pickled {type(content).__name__}, not the dict a CIFAR file holds. "
            "Download and extract the python version again."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _require_keys(path: Path, content: dict[str, Any], keys: list[str]) -> None:
    absent = [k for k in keys if k not in content]
    if absent:
        raise DataError(
            f"{str(path)!r} has keys {sorted(content)}; expected {keys} (missing {absent}). "
            "It is not a file of the CIFAR python version, or it is from the other CIFAR."
        )


def _read_batch(path: Path, label_keys: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    content = unpickle(path)
    _require_keys(path, content, ["data", *label_keys])
    try:
        data = np.asarray(content["data"])
        labels = [np.asarray(content[k], dtype=np.int64).reshape(-1) for k in label_keys]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: 'data' or the labels are not numeric arrays ({exc}).") from None
    if data.ndim != 2 or data.shape[1] != 3072 or any(len(y) != len(data) for y in labels):
        raise DataError(
            f"{str(path)!r}: 'data' has shape {data.shape} for {len(labels[0])} labels; expected (N, 3072) "
            "uint8 with one label per row."
        )
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > 255):
            raise DataError(f"{str(path)!r}: 'data' holds values outside 0-255 ({data.dtype}).")
        data = data.astype(np.uint8)
    return data.reshape(-1, 3, 32, 32), labels


def _names(path: Path, content: dict[str, Any], key: str, count: int) -> list[str]:
    _require_keys(path, content, [key])
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in content[key]]
    if len(names) != count:
        raise DataError(f"{str(path)!r}: {key!r} lists {len(names)} names; expected {count}.")
    return names


def read_cifar(folder: Path, variant: str = "cifar10", dataset: str | None = None) -> CIFARArrays:
    """Every split of the CIFAR release in ``folder``; ``dataset`` names it in errors."""
    files = FILES[variant]
    names = [*files["train"], *files["test"], files["meta"]]
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        raise missing_dataset(
            dataset or variant,
            folder,
            names,
            CIFAR_SOURCE + f", extracted to a folder {FOLDERS[variant]}/",
            detail=f"Not found: {', '.join(absent)}.",
        )
    num_classes = NUM_CLASSES[variant]
    label_keys = [LABEL_KEYS[variant]] + (["coarse_labels"] if variant == "cifar100" else [])
    arrays: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    for split in ("train", "test"):
        parts = [_read_batch(folder / name, label_keys) for name in files[split]]
        images = np.concatenate([p[0] for p in parts])
        labels = [np.concatenate([p[1][k] for p in parts]) for k in range(len(label_keys))]
        fine = labels[0]
        if fine.size and (fine.min() < 0 or fine.max() >= num_classes):
            raise DataError(
                f"{str(folder)!r} ({split}): labels range over {fine.min()}..{fine.max()}; {variant} has "
                f"{num_classes} classes. Is this the other CIFAR?"
            )
        arrays[split] = (images, labels)
    meta_path = folder / files["meta"]
    meta = unpickle(meta_path)
    class_names = _names(meta_path, meta, NAME_KEYS[variant], num_classes)
    out = CIFARArrays(
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1][0],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1][0],
        class_names=class_names,
    )
    if variant == "cifar100":
        out.superclasses = _superclasses(folder, arrays["train"][1][0], arrays["train"][1][1], num_classes)
        if "coarse_label_names" in meta:
            out.superclass_names = [str(n) for n in meta["coarse_label_names"]]
    return out


def _superclasses(folder: Path, fine: np.ndarray, coarse: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The coarse class of each fine class, from the training labels (None for a class never seen)."""
    mapping = np.full(num_classes, -1, dtype=np.int64)
    for f in range(num_classes):
        values = np.unique(coarse[fine == f])
        if len(values) > 1:
            raise DataError(
                f"{str(folder)!r}: fine class {f} appears under coarse classes {values.tolist()}; each CIFAR-100 "
                "class belongs to one superclass. The file is corrupt."
            )
        if len(values):
            mapping[f] = values[0]
    return mapping if (mapping >= 0).all() else None


# ---------------------------------------------------------------------------------------------
# Building splits
# ---------------------------------------------------------------------------------------------


def _folder(config: _CIFARBase, data_root: Path, variant: str) -> Path:
    return Path(config.root) if config.root else Path(data_root) / FOLDERS[variant]


def _split(images: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> ArraySplit:
    import torch

    from robust.api import ArraySplit

    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    g = y.clone() if groups is None else torch.from_numpy(np.ascontiguousarray(groups, dtype=np.int64))
    return ArraySplit(labels=y, groups=g, images=torch.from_numpy(np.ascontiguousarray(images)))


def _copy(split: ArraySplit) -> ArraySplit:
    """Another split object over the same tensors (val and aux["meta"] are the same images)."""
    from robust.api import ArraySplit

    return ArraySplit(labels=split.labels, groups=split.groups, images=split.images)


def _info(name: str, data: CIFARArrays, extra: dict[str, Any]) -> Any:
    from robust.api import DatasetInfo

    if data.superclasses is not None:
        extra = {**extra, "superclasses": data.superclasses.tolist()}
        if data.superclass_names is not None:
            extra["superclass_names"] = data.superclass_names
    return DatasetInfo(
        name=name,
        num_classes=len(data.class_names),
        input_shape=(3, 32, 32),
        class_names=list(data.class_names),
        group_names=list(data.class_names),
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        train_augment="crop_flip",
        extra=extra,
    )


def _config(config: Any, cls: type) -> Any:
    return config if isinstance(config, cls) else cls.model_validate(config)


def _plain(name: str, variant: str, config: CIFARConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    from robust.api import DatasetBundle

    config = _config(config, CIFARConfig)
    folder = _folder(config, data_root, variant)
    data = read_cifar(folder, variant, name)
    test = _split(data.test_images, data.test_labels)
    if config.val_size:
        try:
            rest, held = protocols.stratified_holdout(data.train_labels, config.val_size, config.seed)
        except ValueError as exc:
            raise DataError(f"{name}: cannot hold out val_size = {config.val_size} images: {exc}.") from None
        train = _split(data.train_images[rest], data.train_labels[rest])
        val = _split(data.train_images[held], data.train_labels[held])
    else:
        train, val = _split(data.train_images, data.train_labels), _copy(test)
    extra = {"folder": str(folder), "val_size": config.val_size, "val_is_test": config.val_size == 0}
    return DatasetBundle(info=_info(name, data, extra), splits={"train": train, "val": val, "test": test})


def _val(name: str, source: str, meta: ArraySplit | None, test: ArraySplit) -> ArraySplit:
    if source == "meta":
        if meta is None:
            raise ConfigError(f"{name}: val_source = 'meta' needs a meta set; set num_meta > 0 or val_source = 'test'.")
        return _copy(meta)
    return _copy(test)


def _long_tailed(name: str, variant: str, config: CIFARLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    from robust.api import DatasetBundle

    config = _config(config, CIFARLTConfig)
    folder = _folder(config, data_root, variant)
    data = read_cifar(folder, variant, name)
    C = len(data.class_names)
    selection = select_long_tailed(
        data.train_labels,
        C,
        config.imb_factor,
        config.recipe,
        seed=config.seed,
        num_meta=config.num_meta,
        shuffle_class_order=config.shuffle_class_order,
        imb_type=config.imb_type,
        dataset=name,
    )
    test = _split(data.test_images, data.test_labels)
    meta = _split(data.train_images[selection.meta], data.train_labels[selection.meta]) if len(selection.meta) else None
    source = config.val_source if config.val_source != "auto" else ("meta" if meta is not None else "test")
    train = _split(data.train_images[selection.train], data.train_labels[selection.train])
    extra = {
        "folder": str(folder),
        "recipe": config.recipe,
        "imb_factor": config.imb_factor,
        "imb_type": config.imb_type,
        "num_meta": len(selection.meta) // C if C else 0,
        "class_counts_requested": selection.counts,
        "train_class_counts": selection.kept,
        "val_source": source,
        "val_is_test": source == "test",
    }
    return DatasetBundle(
        info=_info(name, data, extra),
        splits={"train": train, "val": _val(name, source, meta, test), "test": test},
        aux={"meta": meta} if meta is not None else {},
    )


def select_long_tailed(
    labels: np.ndarray,
    num_classes: int,
    imb_factor: float,
    recipe: str,
    *,
    seed: int,
    num_meta: int | None = None,
    shuffle_class_order: bool | None = None,
    imb_type: str = "exp",
    rng: np.random.RandomState | None = None,
    dataset: str = "cifar",
) -> protocols.LongTailedSelection:
    """The meta set and long-tailed training set of ``recipe`` (``mwnet``, ``clp``, ``ldam``).

    Defaults per recipe, for a training set of N images: ``mwnet`` 10 meta images per class,
    ``n_max = (N − 10·C) / C``; ``clp`` ``1000 // C`` per class, ``n_max = ⌊(N − 1000) / C⌋``,
    class order shuffled, CLP's ``n_max / ρ^x`` arithmetic; ``ldam`` no meta set, ``n_max = N / C``.
    """
    defaults = {"mwnet": 10, "clp": META_TOTAL // num_classes, "ldam": 0}
    if recipe not in defaults:
        raise ConfigError(f"{dataset}: recipe must be one of {', '.join(defaults)}, got {recipe!r}.")
    per_class = defaults[recipe] if num_meta is None else num_meta
    n = len(labels)
    if recipe == "clp":
        n_max: float = int((n - per_class * num_classes) / num_classes)
    else:
        n_max = (n - per_class * num_classes) / num_classes
    shuffle = (recipe == "clp") if shuffle_class_order is None else shuffle_class_order
    try:
        return protocols.long_tailed_indices(
            labels,
            imb_factor,
            seed,
            num_classes=num_classes,
            num_meta=per_class,
            n_max=n_max,
            shuffle_class_order=shuffle,
            profile=imb_type,  # type: ignore[arg-type]
            formula="divide" if recipe == "clp" else "multiply",
            rng=rng,
        )
    except ValueError as exc:
        raise DataError(f"{dataset}: cannot build the long-tailed split: {exc}.") from None


def _noisy(name: str, variant: str, config: CIFARNoisyConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    from robust.api import DatasetBundle

    config = _config(config, CIFARNoisyConfig)
    folder = _folder(config, data_root, variant)
    data = read_cifar(folder, variant, name)
    C = len(data.class_names)
    if config.corruption_type == "hierarchical" and data.superclasses is None:
        raise ConfigError(
            f"{name}: hierarchical noise needs CIFAR-100's superclasses (coarse_labels); use unif, flip or flip2."
        )
    per_class = META_TOTAL // C if config.num_meta is None else config.num_meta
    if config.recipe == "clp":
        # CLP's build_dataloader with imbalanced_factor 1: one stream for everything, in its order
        rng = np.random.RandomState(config.seed)
        selection = select_long_tailed(
            data.train_labels, C, 1.0, "clp", seed=config.seed, num_meta=per_class, rng=rng, dataset=name
        )
        matrix_rng: np.random.RandomState | None = rng
    else:
        rng = np.random.RandomState(config.seed)
        selection = select_long_tailed(
            data.train_labels, C, 1.0, "mwnet", seed=config.seed, num_meta=per_class, rng=rng, dataset=name
        )
        matrix_rng = None  # Meta-Weight-Net: its own generator, seed 1
    matrix = protocols.transition_matrix(
        config.corruption_type, config.corruption_ratio, C, rng=matrix_rng, superclasses=data.superclasses
    )
    clean = data.train_labels[selection.train]
    noisy = protocols.noisy_labels(clean, C, config.corruption_type, config.corruption_ratio, rng=rng, matrix=matrix)
    test = _split(data.test_images, data.test_labels)
    meta = _split(data.train_images[selection.meta], data.train_labels[selection.meta]) if len(selection.meta) else None
    train = _split(data.train_images[selection.train], noisy)
    extra = {
        "folder": str(folder),
        "recipe": config.recipe,
        "corruption_type": config.corruption_type,
        "corruption_ratio": config.corruption_ratio,
        "num_meta": per_class,
        "transition_matrix": matrix.tolist(),
        "noise_rate": float((noisy != clean).mean()) if len(clean) else 0.0,
        "clean_train_labels": clean.tolist(),
        "val_source": config.val_source,
        "val_is_test": config.val_source == "test",
    }
    return DatasetBundle(
        info=_info(name, data, extra),
        splits={"train": train, "val": _val(name, config.val_source, meta, test), "test": test},
        aux={"meta": meta} if meta is not None else {},
    )


def load_cifar10(config: CIFARConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CIFAR-10 from ``DATA_ROOT/cifar-10-batches-py`` (or ``config.root``)."""
    return _plain("cifar10", "cifar10", config, data_root)


def load_cifar100(config: CIFARConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CIFAR-100 from ``DATA_ROOT/cifar-100-python`` (or ``config.root``)."""
    return _plain("cifar100", "cifar100", config, data_root)


def load_cifar10_lt(config: CIFARLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Long-tailed CIFAR-10 with its clean meta set."""
    return _long_tailed("cifar10-lt", "cifar10", config, data_root)


def load_cifar100_lt(config: CIFARLTConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """Long-tailed CIFAR-100 with its clean meta set."""
    return _long_tailed("cifar100-lt", "cifar100", config, data_root)


def load_cifar10_noisy(config: CIFARNoisyConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CIFAR-10 with noisy training labels and a clean meta set."""
    return _noisy("cifar10-noisy", "cifar10", config, data_root)


def load_cifar100_noisy(config: CIFARNoisyConfig | dict[str, Any], data_root: Path) -> DatasetBundle:
    """CIFAR-100 with noisy training labels and a clean meta set."""
    return _noisy("cifar100-noisy", "cifar100", config, data_root)
