"""Make Colored MNIST and Corrupted CIFAR-10 the way LfF (Nam et al. 2020) does, in DisEnt's folders.

The output is the layout :mod:`robust_datasets.lff_release` reads (``<out>/cmnist`` or
``<out>/cifar10c``, with ``<pct>/{align,conflict}/<y>/<id>_<y>_<b>.png``, ``<pct>/valid`` and
``test/<y>/``), so a generated set and DisEnt's release load the same way. numpy and PIL only.

What is LfF's (§2a of our dataset notes):

- bias labels by :func:`make_attr_labels`: per class, deterministic counts in contiguous runs
  of the dataset order (aligned ratio ρ_a = 1 − pct/100 on train, 0.1 — unbiased — on test);
- Colored MNIST: one colour per image, LfF's ``colors.th`` mean colour of the bias value plus
  N(0, σ²) per channel, clamped to [0, 1], times the grey digit, truncated to uint8; σ by
  severity 1..5 = 0.05, 0.02, 0.01, 0.005, 0.002 (default 4, LfF's example run);
- Corrupted CIFAR-10: the bias value picks a corruption, applied at Hendrycks level
  severity + 1 (severity 1..4, default 4 = level 5), the output truncated to uint8.

What is ours (DisEnt's layout needs it; LfF's own split is train + unbiased "valid"):

- ``valid``: a seeded random ``valid_fraction`` (default 0.1) of the source training set, held
  out of training and biased like train (same ρ_a, as DisEnt's valid); the same images for every
  pct. ``test``: the source test split at ρ_a = 0.1 (LfF's "valid"), shared by every pct.
- the corruption list: the ten of Hendrycks' CIFAR-10-C corruptions that need no ImageMagick,
  frost textures or slow loops, in :data:`CORRUPTIONS` order (bias value b = index); LfF's own
  lists (Type0 / Type1) need those and are not reproduced.
- file ids: the image's index in its source split (MNIST or CIFAR order), so ids are unique
  within a split and traceable. A ``metadata.json`` beside the pct folders records the options,
  the corruption list (as ``bias_names``) and the counts.

The output is written to ``<name>.partial`` and renamed at the end, so an interrupted run never
leaves a half dataset under the final name.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from robust.api import DataError
from robust_datasets.lff_release import CIFAR10_CLASSES, METADATA_FILE, PCTS, pct_folder
from robust_datasets.mnist import read_mnist
from robust_datasets.safe_pickle import load_pickle
from robust_datasets.sources import CIFAR_SOURCE
from robust_datasets.synthetic_cmnist import COLOR_NAMES, COLORS

GENERATOR_VERSION = 1
CMNIST_SIGMAS = (0.05, 0.02, 0.01, 0.005, 0.002)  # σ of the colour noise by LfF severity 1..5
TEST_ALIGNED_RATIO = 0.1  # ρ_a of the unbiased eval split: every bias value 10 % of each class
CHUNK = 2048  # images rendered at once (bounded memory; part of the output's definition via the rng stream)

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "saturate",
    "jpeg",
    "pixelate",
)
# Hendrycks' CIFAR-10-C parameters, levels 1..5.
LEVELS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}


# ---------------------------------------------------------------------------------------------
# Bias labels and colouring
# ---------------------------------------------------------------------------------------------


def make_attr_labels(targets: np.ndarray, aligned_ratio: float, num_classes: int = 10) -> np.ndarray:
    """LfF's bias labels: per class c, bias c with ratio ρ_a, every other value (1 − ρ_a)/(C − 1).

    Counts are deterministic: with ``milestones = round(n_c · cumsum(row_c))`` the k-th sample
    of class c (in dataset order) gets the smallest b with ``milestones[b] > k``.
    """
    targets = np.asarray(targets)
    bias = np.empty(len(targets), dtype=np.int64)
    for c in range(num_classes):
        index = np.flatnonzero(targets == c)
        row = np.full(num_classes, (1 - aligned_ratio) / (num_classes - 1))
        row[c] = aligned_ratio
        milestones = np.round(len(index) * np.cumsum(row))
        bias[index] = np.minimum(np.searchsorted(milestones, np.arange(len(index)), side="right"), num_classes - 1)
    return bias


def colorize(gray: np.ndarray, bias: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Colored MNIST images uint8 ``(N, 28, 28, 3)`` from grey digits ``(N, 28, 28)`` and bias values."""
    noise = rng.normal(0.0, 1.0, size=(len(bias), 3)) * sigma
    colors = np.clip(COLORS[bias].astype(np.float64) + noise, 0.0, 1.0)
    return (colors[:, None, None, :] * gray[..., None].astype(np.float64)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Corruptions (float images (N, H, W, 3) in [0, 1] unless they work on uint8)
# ---------------------------------------------------------------------------------------------


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    maxc, minc = x.max(axis=-1), x.min(axis=-1)
    delta = maxc - minc
    safe = np.where(delta == 0, 1.0, delta)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(delta == 0, 0.0, (hue / 6.0) % 1.0)
    sat = np.where(maxc == 0, 0.0, delta / np.where(maxc == 0, 1.0, maxc))
    return np.stack([hue, sat, maxc], axis=-1)


def _hsv_to_rgb(x: np.ndarray) -> np.ndarray:
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(i, [c[k] for c in choices]) for k in range(3)], axis=-1)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over H and W, edges replicated (skimage's default ``nearest``), truncate 4σ."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        size = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(k, k + size), axis=axis) for k, w in enumerate(kernel))
    return x


def _impulse(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(x.dtype), x)


def _pil_each(images: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(image)).convert("RGB"), dtype=np.uint8) for image in images])


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _pixelate(image: Image.Image, c: float) -> Image.Image:
    w, h = image.size
    return image.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)


def corrupt(images: np.ndarray, name: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """``images`` uint8 ``(N, H, W, 3)`` with corruption ``name`` at Hendrycks level 1..5, uint8 out."""
    if name not in LEVELS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    c = LEVELS[name][level - 1]
    if name == "jpeg":
        return _pil_each(images, lambda im: _jpeg(im, c))
    if name == "pixelate":
        return _pil_each(images, lambda im: _pixelate(im, c))
    x = images.astype(np.float64) / 255.0
    if name == "gaussian_noise":
        x = x + rng.normal(0.0, c, size=x.shape)
    elif name == "shot_noise":
        x = rng.poisson(x * c) / c
    elif name == "impulse_noise":
        x = _impulse(x, c, rng)
    elif name == "speckle_noise":
        x = x + x * rng.normal(0.0, c, size=x.shape)
    elif name == "gaussian_blur":
        x = _gaussian_blur(x, c)
    elif name == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        x = (x - means) * c + means
    elif name in ("brightness", "saturate"):
        hsv = _rgb_to_hsv(x)
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        x = _hsv_to_rgb(hsv)
    return (np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _unpickle(path: Path) -> dict[str, Any]:
    # restricted: a crafted batch must not run code (robust_datasets.safe_pickle)
    batch = load_pickle(path, "CIFAR batch", "Download it again.")
    if not isinstance(batch, dict):
        raise DataError(f"{str(path)!r} is not a CIFAR batch (a pickled dict); download it again.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _read_cifar_batches(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 python batches as ``{"train": (images uint8 (N, 32, 32, 3), labels), "test": ...}``."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    absent = [name for names in files.values() for name in names if not (folder / name).is_file()]
    if absent:
        from robust_datasets.missing import missing_dataset

        raise missing_dataset(
            "cifar10",
            folder,
            [n for names in files.values() for n in names],
            CIFAR_SOURCE,
            detail=f"Not found: {', '.join(absent)}.",
        )
    out = {}
    for split, names in files.items():
        images, labels = [], []
        for name in names:
            batch = _unpickle(folder / name)
            if "data" not in batch or "labels" not in batch:
                raise DataError(
                    f"{str(folder / name)!r} has keys {sorted(batch)}; a CIFAR-10 batch has 'data' and 'labels'."
                )
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch["labels"]):
                raise DataError(
                    f"{str(folder / name)!r}: data has shape {data.shape} for {len(batch['labels'])} labels; "
                    "expected (N, 3072)."
                )
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch["labels"], dtype=np.int64))
        out[split] = (np.concatenate(images), np.concatenate(labels))
    return out


# ---------------------------------------------------------------------------------------------
# Writing the layout
# ---------------------------------------------------------------------------------------------


def _write_split(
    folders: tuple[Path, Path] | Path,
    ids: np.ndarray,
    labels: np.ndarray,
    bias: np.ndarray,
    images: np.ndarray,
    render: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray],
    rng: np.random.Generator,
    nested: bool = True,
) -> None:
    """Render and save one split chunk by chunk (bounded memory), as ``<id>_<y>_<b>.png``.

    ``folders`` is ``(align, conflict)`` to sort by ``y == b``, or one folder for everything.
    """
    for folder in (folders,) if isinstance(folders, Path) else folders:
        folder.mkdir(parents=True, exist_ok=True)  # even when empty (a tiny source can have no conflicts)
    for start in range(0, len(ids), CHUNK):
        part = slice(start, start + CHUNK)
        rendered = render(images[part], bias[part], rng)
        for i, y, b, image in zip(ids[part], labels[part], bias[part], rendered, strict=True):
            folder = folders if isinstance(folders, Path) else folders[0 if y == b else 1]
            target = folder / str(y) if nested else folder
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target / f"{i}_{y}_{b}.png")


def _check_pcts(pcts: Iterable[float]) -> list[float]:
    pcts = sorted({float(p) for p in pcts})
    bad = [p for p in pcts if p not in PCTS]
    if bad or not pcts:
        raise DataError(f"conflict percentages must be among {', '.join(f'{p:g}' for p in PCTS)}; got {pcts}.")
    return pcts


def _generate(
    name: str,
    out: Path,
    sources: dict[str, tuple[np.ndarray, np.ndarray]],
    render: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray],
    pcts: Iterable[float],
    valid_fraction: float,
    seed: int,
    nested_valid: bool,
    overwrite: bool,
    metadata: dict[str, Any],
) -> Path:
    """Write ``out/name`` in DisEnt's layout; ``render(images, bias, rng)`` draws the biased images."""
    pcts = _check_pcts(pcts)
    if not 0 < valid_fraction < 1:
        raise DataError(f"valid_fraction must be in (0, 1), got {valid_fraction}.")
    final = Path(out) / name
    if final.exists() and not overwrite:
        raise DataError(f"{str(final)!r} already exists; pass overwrite (--overwrite) to replace it.")
    partial = Path(out) / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    train_images, train_labels = sources["train"]
    n_valid = max(1, round(len(train_labels) * valid_fraction))
    order = np.random.default_rng([seed, 0]).permutation(len(train_labels))
    valid_ids, train_ids = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    counts: dict[str, Any] = {}
    for pct in pcts:
        folder = partial / pct_folder(pct)
        k = round(pct * 10)  # streams keyed by the pct itself: a pct's files do not depend on the others made
        labels = train_labels[train_ids]
        bias = make_attr_labels(labels, 1 - pct / 100)
        rng = np.random.default_rng([seed, 1, k])
        _write_split(
            (folder / "align", folder / "conflict"), train_ids, labels, bias, train_images[train_ids], render, rng
        )
        valid_labels = train_labels[valid_ids]
        valid_bias = make_attr_labels(valid_labels, 1 - pct / 100)
        rng = np.random.default_rng([seed, 2, k])
        _write_split(
            folder / "valid",
            valid_ids,
            valid_labels,
            valid_bias,
            train_images[valid_ids],
            render,
            rng,
            nested=nested_valid,
        )
        aligned = int((labels == bias).sum())
        counts[pct_folder(pct)] = {"n_align": aligned, "n_conflict": len(labels) - aligned, "n_valid": len(valid_ids)}
    test_images, test_labels = sources["test"]
    test_bias = make_attr_labels(test_labels, TEST_ALIGNED_RATIO)
    test_ids = np.arange(len(test_labels))
    rng = np.random.default_rng([seed, 3])
    _write_split(partial / "test", test_ids, test_labels, test_bias, test_images, render, rng)

    record = {
        "generator": f"robust_datasets.lff_generators (version {GENERATOR_VERSION})",
        **metadata,
        "seed": seed,
        "valid_fraction": valid_fraction,
        "valid": "held-out part of the source train split, biased like train",
        "test": f"source test split, aligned ratio {TEST_ALIGNED_RATIO} (unbiased)",
        "counts": counts,
        "n_test": len(test_labels),
    }
    (partial / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return final


def make_cmnist(
    mnist_root: Path,
    out: Path,
    pcts: Iterable[float] = PCTS,
    severity: int = 4,
    valid_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Colored MNIST from the MNIST idx files in ``mnist_root``, written to ``out/cmnist``; returns that path."""
    if severity not in range(1, 6):
        raise DataError(f"Colored MNIST severity must be 1..5, got {severity}.")
    sigma = CMNIST_SIGMAS[severity - 1]
    sources = read_mnist(Path(mnist_root), "mnist")
    metadata = {
        "source": str(mnist_root),
        "severity": severity,
        "sigma": sigma,
        "bias_names": list(COLOR_NAMES),
        "colors": COLORS.tolist(),
    }

    def render(images: np.ndarray, bias: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return colorize(images, bias, sigma, rng)

    return _generate("cmnist", out, sources, render, pcts, valid_fraction, seed, False, overwrite, metadata)


def make_cifar10c(
    cifar_root: Path,
    out: Path,
    pcts: Iterable[float] = PCTS,
    severity: int = 4,
    valid_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Corrupted CIFAR-10 from the python batches in ``cifar_root``, written to ``out/cifar10c``."""
    if severity not in range(1, 5):
        raise DataError(f"Corrupted CIFAR-10 severity must be 1..4 (Hendrycks level severity + 1), got {severity}.")
    level = severity + 1
    sources = _read_cifar_batches(Path(cifar_root))
    metadata = {
        "source": str(cifar_root),
        "severity": severity,
        "level": level,
        "bias_names": list(CORRUPTIONS),
        "class_names": list(CIFAR10_CLASSES),
    }

    def render(images: np.ndarray, bias: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        result = np.empty_like(images)
        for b, name in enumerate(CORRUPTIONS):
            chosen = np.flatnonzero(bias == b)
            if len(chosen):
                result[chosen] = corrupt(images[chosen], name, level, rng)
        return result

    return _generate("cifar10c", out, sources, render, pcts, valid_fraction, seed, True, overwrite, metadata)
