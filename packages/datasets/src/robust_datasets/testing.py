"""Fake releases of the on-disk datasets, for tests: tiny files in each dataset's real layout, written
in a second, so that a loader (and a method's preset for that dataset) can be tested without the
download. robust-datasets' own tests check its loaders against these; a method package that lists
robust-datasets among its test dependencies uses them to run its presets on the released layouts::

    from robust_datasets.testing import write_cifar10

    def test_my_preset_on_cifar10(tmp_path):
        write_cifar10(tmp_path / "cifar-10-batches-py")
        ...  # data_root=tmp_path

Test code only: nothing in robust-datasets imports it.
"""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from robust_datasets import cct, waterbirds


def save_image(path: Path, array: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 array as an image file, making the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# -- CIFAR-10 (cifar-10-batches-py: five pickled training batches, a test batch, batches.meta) ---

CIFAR10_PER_CLASS = 30  # 300 training images, split over the 5 batch files


def cifar_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 3072) uint8 rows whose red plane encodes the label (checkable after the reshape)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    data[:, :1024] = (labels[:, None] * 2) % 256  # whole R plane = 2·label
    return data


def write_pickle(path: Path, content: dict, byte_keys: bool = False) -> None:
    """A pickle as CIFAR's (protocol 2; ``byte_keys``: bytes keys, as the Python 2 pickles have)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if byte_keys:
        content = {k.encode(): v for k, v in content.items()}
    with path.open("wb") as f:
        pickle.dump(content, f, protocol=2)


def cifar10_labels(per_class: int = CIFAR10_PER_CLASS) -> np.ndarray:
    labels = np.tile(np.arange(10), per_class)
    return labels[np.random.default_rng(0).permutation(len(labels))]


def write_cifar10(
    folder: Path, per_class: int = CIFAR10_PER_CLASS, test_per_class: int = 5, byte_keys: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 in ``folder`` (…/cifar-10-batches-py); returns the training labels and rows."""
    labels = cifar10_labels(per_class)
    data = cifar_images(labels, 1)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        write_pickle(
            folder / f"data_batch_{i + 1}",
            {
                "batch_label": f"training batch {i + 1} of 5",
                "labels": labels[part].tolist(),
                "data": data[part],
                "filenames": [f"img_{j}.png" for j in part],
            },
            byte_keys,
        )
    test_labels = np.tile(np.arange(10), test_per_class)
    write_pickle(
        folder / "test_batch",
        {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(), "data": cifar_images(test_labels, 2)},
        byte_keys,
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(
        folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}, byte_keys
    )
    return labels, data


# -- MNIST / Fashion-MNIST (idx files, torchvision's raw layout) --------------------------------

MNIST_N_TRAIN, MNIST_N_TEST = 120, 40


def digit_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Grey 28×28 "digits": a 255-valued block whose position encodes the label, plus faint noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        row, col = 2 + 10 * (y // 5), 2 + 5 * (y % 5)
        images[i, row : row + 8, col : col + 4] = 255
    return images


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = False) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(
    folder: Path,
    n_train: int = MNIST_N_TRAIN,
    n_test: int = MNIST_N_TEST,
    gz: bool = False,
    raw: bool = True,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four idx files in ``folder/raw`` (torchvision) or ``folder``; returns what was written."""
    base = folder / "raw" if raw else folder
    suffix = ".gz" if gz else ""
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) * 7 + seed) % 10  # every class, not sorted
        images = digit_images(labels, seed + n)
        write_idx(base / f"{split}-images-idx3-ubyte{suffix}", images, 2051, gz)
        write_idx(base / f"{split}-labels-idx1-ubyte{suffix}", labels, 2049, gz)
        written["train" if split == "train" else "test"] = (images, labels)
    return written


# -- Waterbirds (species folders of 24×16 JPEGs, metadata.csv, CUB-style segmentations) --------

WATERBIRDS_SPECIES = {0: "026.Bronzed_Cowbird", 1: "001.Black_footed_Albatross"}  # y -> species folder
# (split, y, place) -> images: train 95 %-style skew, val/test balanced within each class
WATERBIRDS_COUNTS = {
    (0, 0, 0): 4, (0, 0, 1): 1, (0, 1, 0): 1, (0, 1, 1): 3,
    (1, 0, 0): 2, (1, 0, 1): 2, (1, 1, 0): 1, (1, 1, 1): 1,
    (2, 0, 0): 2, (2, 0, 1): 2, (2, 1, 0): 2, (2, 1, 1): 2,
}  # fmt: skip
WATERBIRDS_WIDTH, WATERBIRDS_HEIGHT = 24, 16
WATERBIRDS_BOX = (8, 4, 16, 12)  # bird box x0, y0, x1, y1 in the stored 24×16 image


def waterbirds_rows() -> list[dict]:
    """Metadata rows in an interleaved order (not sorted by split), CUB-like ids and names."""
    entries = [(key, k) for key, n in WATERBIRDS_COUNTS.items() for k in range(n)]
    entries.sort(key=lambda e: (e[1], e[0][1], e[0][0], e[0][2]))
    out = []
    for img_id, ((split, y, place), k) in enumerate(entries, start=1):
        species = WATERBIRDS_SPECIES[y]
        short = species.split(".", 1)[1]
        out.append(
            {
                "img_id": img_id,
                "img_filename": f"{species}/{short}_{k:04d}_{img_id}{split}{place}.jpg",
                "y": y,
                "split": split,
                "place": place,
                "place_filename": f"/{'o/ocean' if place else 'b/bamboo_forest'}/{img_id:08d}.jpg",
            }
        )
    return out


def write_waterbirds(root: Path, masks: bool = True) -> Path:
    """The Waterbirds release under ``root`` (with the CUB segmentations in ``segmentations/`` of its
    folder when ``masks``); returns the release's folder."""
    folder = root / waterbirds.FOLDER
    entries = waterbirds_rows()
    x0, y0, x1, y1 = WATERBIRDS_BOX
    for entry in entries:
        path = folder / entry["img_filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.zeros((WATERBIRDS_HEIGHT, WATERBIRDS_WIDTH, 3), dtype=np.uint8)
        image[:] = (40, 200, 60) if entry["place"] == 0 else (30, 60, 220)  # land green, water blue
        image[y0:y1, x0:x1] = (250, 250, 250) if entry["y"] else (120, 70, 20)
        Image.fromarray(image).save(path, quality=95)
        if masks:
            mask_path = folder / "segmentations" / Path(entry["img_filename"]).with_suffix(".png")
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask = np.zeros((WATERBIRDS_HEIGHT, WATERBIRDS_WIDTH), dtype=np.uint8)
            mask[y0:y1, x0:x1] = 255
            mask[y0 - 1, x0:x1] = 51  # soft annotator edge: still foreground (non-zero)
            Image.fromarray(mask, mode="L").save(mask_path)
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(waterbirds.HEADER))
        writer.writeheader()
        writer.writerows(entries)
    return folder


# -- ImageNet-9 backgrounds (bg_challenge: ImageFolder trees of 16×16 images) -------------------

IN9_CLASSES = ["00_dog", "01_bird", "02_fish"]
IN9_SIDE = 16
IN9_FOREGROUND = (4, 6, 10, 12)  # x0, y0, x1, y1 of the foreground square in the training originals


def in9_image(label: int, seed: int) -> np.ndarray:
    """A noisy image, bright enough that no pixel is 0 (the mask rule looks for exact zeros)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(40, 200, size=(IN9_SIDE, IN9_SIDE, 3), dtype=np.uint8)
    array[..., label % 3] = 230
    return array


def write_imagenet9(root: Path, train_set: str = "original", per_class: int = 2, no_fg: bool = True) -> Path:
    """``root/bg_challenge``: the training set ``train_set`` (with one no_fg image in two when
    ``no_fg``) and the five test variants; returns that folder."""
    folder = root / "bg_challenge"
    seed = 0
    for relative in (f"train/{train_set}/train", f"train/{train_set}/val", *(f"test/{v}/val" for v in (
            "original", "mixed_same", "mixed_rand", "mixed_next", "only_fg"))):  # fmt: skip
        for label, name in enumerate(IN9_CLASSES):
            for k in range(per_class):
                seed += 1
                array = in9_image(label, seed)
                ext = ".png" if relative.startswith("train") else ".JPEG"
                save_image(folder / relative / name / f"n{label}_{k}{ext}", array)
                if relative == f"train/{train_set}/train" and no_fg and k == 0:  # one of two has a no_fg image
                    blacked = array.copy()
                    x0, y0, x1, y1 = IN9_FOREGROUND
                    blacked[y0:y1, x0:x1] = 0
                    save_image(folder / "train/no_fg/train" / name / f"n{label}_{k}.png", blacked)
    return folder


# -- Caltech Camera Traps (COCO-style annotation files, 32×24 "_sm" images) ---------------------

CCT_CATEGORIES = [{"id": 30, "name": "empty"}, {"id": 5, "name": "fox"}, {"id": 1, "name": "opossum"},
                  {"id": 9, "name": "deer"}]  # fmt: skip
CCT_TRAIN_ANNOTATIONS = [
    {"id": "1", "image_id": "d", "category_id": 9, "bbox": [0, 0, 64, 48]},
    {"id": "2", "image_id": "a", "category_id": 1, "bbox": [8, 12, 16, 12]},
    {"id": "3", "image_id": "b", "category_id": 5},  # no box
    {"id": "4", "image_id": "c", "category_id": 30},  # empty: dropped
    {"id": "5", "image_id": "a", "category_id": 1, "bbox": [40, 0, 8, 6]},  # second box of the same pair
    {"id": "6", "image_id": "d", "category_id": 1, "bbox": [32, 24, 16, 12]},  # a second species in d
]


def write_cct(root: Path) -> Path:
    """``root/cct``: six images (boxes in 64×48 original pixels) and every split's annotation file."""
    folder = root / "cct"
    (folder / cct.ANNOTATIONS).mkdir(parents=True)
    (folder / cct.IMAGES).mkdir()
    ids = ["a", "b", "c", "d", "e", "f"]
    for k, image_id in enumerate(ids):
        array = np.full((24, 32, 3), 20 * k + 10, dtype=np.uint8)
        Image.fromarray(array).save(folder / cct.IMAGES / f"{image_id}.jpg")
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48, "location": 1} for i in ids]
    for split, file in cct.SPLIT_FILES.items():
        annotations = CCT_TRAIN_ANNOTATIONS if split == "train" else [
            {"id": "7", "image_id": "e", "category_id": 5, "bbox": [0, 0, 32, 24]},
            {"id": "8", "image_id": "f", "category_id": 1, "bbox": [0, 0, 8, 8]},
        ]  # fmt: skip
        content = {"info": {}, "images": images, "annotations": annotations, "categories": CCT_CATEGORIES}
        (folder / cct.ANNOTATIONS / file).write_text(json.dumps(content))
    return folder


# -- DisEnt's released cmnist / cifar10c / bffhq (PNG folders per conflict percentage) ----------


def write_lff_release(
    root: Path, name: str, pcts: tuple[str, ...] = ("1pct",), classes: int = 10, size: int = 8
) -> dict[str, list[tuple]]:
    """A tiny release ``root/name``: per pct, each class aligned twice and conflicting once; valid and
    test per class.

    Returns the (y, b) pairs written per split (for the first pct). Pixel value = 10·y + b, so
    images can be matched to their names.
    """
    written: dict[str, list[tuple]] = {"train": [], "val": [], "test": []}
    ident = 0

    def put(folder: Path, y: int, b: int, split: str, nested: bool = True, record: bool = True) -> None:
        nonlocal ident
        ident += 1
        path = (folder / str(y) if nested else folder) / f"{ident}_{y}_{b}.png"
        save_image(path, np.full((size, size, 3), 10 * y + b, np.uint8))
        if record:
            written[split].append((y, b))

    for pct in pcts:
        first = pct == pcts[0]
        for y in range(classes):
            for _ in range(2):
                put(root / name / pct / "align", y, y, "train", record=first)
            put(root / name / pct / "conflict", y, (y + 1) % classes, "train", record=first)
            if name != "bffhq":
                put(root / name / pct / "valid", y, y, "val", nested=name == "cifar10c", record=first)
    for y in range(classes):
        for b in range(classes):
            put(root / name / "test", y, b, "test", nested=name != "bffhq")
        if name == "bffhq":
            put(root / name / "valid", y, y, "val", nested=False)
    return written
