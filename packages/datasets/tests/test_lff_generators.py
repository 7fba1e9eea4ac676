"""The LfF generators: bias labels, colouring, corruptions, and the DisEnt folders they write."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from robust.errors import DataError
from robust_datasets import lff_generators as gen
from robust_datasets.lff_commands import make_cifar10c_command, make_cmnist_command
from robust_datasets.lff_release import load_cifar10c, load_cmnist
from robust_datasets.testing import write_mnist

N_MNIST_TRAIN, N_MNIST_TEST = 200, 100


def naive_attr_labels(targets: np.ndarray, ratio: float, classes: int = 10) -> np.ndarray:
    """LfF's make_attr_labels, written as the loop of its definition."""
    out = np.zeros(len(targets), dtype=np.int64)
    for c in range(classes):
        row = [ratio if b == c else (1 - ratio) / (classes - 1) for b in range(classes)]
        members = [i for i, t in enumerate(targets) if t == c]
        milestones = [round(len(members) * float(s)) for s in np.cumsum(row)]
        for k, i in enumerate(members):
            out[i] = next(b for b in range(classes) if milestones[b] > k)
    return out


def write_cifar(folder: Path, per_batch: int = 20, n_test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 python batches with the original's byte-string keys; returns the train images (N, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for i, n in enumerate([per_batch] * 5 + [n_test]):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) * 3 + i) % 10]
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if i < 5:
            train.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return {"train": np.concatenate(train)}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# make_attr_labels and colouring
# ---------------------------------------------------------------------------------------------


def test_attr_labels_unbiased_split_is_uniform():
    targets = np.repeat(np.arange(10), 100)
    bias = gen.make_attr_labels(targets, 0.1)
    for c in range(10):
        assert np.bincount(bias[targets == c], minlength=10).tolist() == [10] * 10
        assert np.all(np.diff(bias[targets == c]) >= 0)  # contiguous runs in dataset order, 0..9


@pytest.mark.parametrize("ratio", [0.995, 0.99, 0.98, 0.95, 0.1])
def test_attr_labels_match_the_definition(ratio):
    targets = np.random.default_rng(3).integers(0, 10, size=2345)
    assert np.array_equal(gen.make_attr_labels(targets, ratio), naive_attr_labels(targets, ratio))


def test_attr_labels_counts():
    targets = np.repeat(np.arange(10), 5400)[np.random.default_rng(0).permutation(54000)]
    bias = gen.make_attr_labels(targets, 0.99)
    aligned = int((bias == targets).sum())
    assert aligned == 10 * (5400 - 9 * 6)  # 1 % of 5400 = 54 conflicting per class, 6 per other colour


def test_colorize_uses_the_table_colour():
    gray = np.zeros((10, 28, 28), np.uint8)
    gray[:, 5:20, 10:15] = 255
    gray[:, 0, 0] = 100
    bias = np.arange(10)
    exact = gen.colorize(gray, bias, 0.0, np.random.default_rng(0))
    assert exact.shape == (10, 28, 28, 3) and exact.dtype == np.uint8
    expected = (gen.COLORS.astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(exact[:, 10, 12], expected)  # truncated, as LfF's uint8 cast
    assert not exact[:, 27, 27].any()  # background stays black
    noisy = gen.colorize(gray, bias, 0.05, np.random.default_rng(0))
    assert np.abs(noisy[:, 10, 12].astype(int) - expected).max() <= 0.05 * 255 * 5
    assert np.array_equal(noisy[:, 10, 12], noisy[:, 15, 11])  # one colour per image


# ---------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos():
    """Smooth-ish random 32×32 images (blocks plus mild noise), so blur and pixelation have an effect."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(30, 220, size=(6, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
    return np.clip(blocks + rng.integers(-20, 21, size=blocks.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", gen.CORRUPTIONS)
def test_every_corruption_changes_images_deterministically(name, photos):
    for level in (1, 5):
        a = gen.corrupt(photos, name, level, np.random.default_rng(1))
        b = gen.corrupt(photos, name, level, np.random.default_rng(1))
        assert a.shape == photos.shape and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, photos)


def test_corruption_effects(photos):
    x = photos.astype(np.float64)
    level5 = {
        name: gen.corrupt(photos, name, 5, np.random.default_rng(0)).astype(np.float64) for name in gen.CORRUPTIONS
    }
    assert level5["contrast"].std() < 0.3 * x.std()  # c = 0.15
    assert level5["brightness"].mean() > x.mean() + 20  # V + 0.3
    assert np.abs(np.diff(level5["gaussian_blur"], axis=1)).mean() < np.abs(np.diff(x, axis=1)).mean()
    extreme = np.isin(level5["impulse_noise"], (0, 255)).mean()
    assert 0.05 < extreme < 0.12  # amount 0.07 of the values, plus the few already at 0/255
    assert abs((level5["gaussian_noise"] - x).std() - 25.5) < 3  # σ = 0.1
    mild = gen.corrupt(photos, "contrast", 1, np.random.default_rng(0)).astype(np.float64)
    assert level5["contrast"].std() < mild.std() < x.std()  # levels get harsher


def test_hsv_round_trip():
    x = np.random.default_rng(0).random((4, 5, 5, 3))
    assert np.allclose(gen._hsv_to_rgb(gen._rgb_to_hsv(x)), x)
    grey = np.full((1, 1, 1, 3), 0.5)
    assert np.allclose(gen._rgb_to_hsv(grey), [[[[0.0, 0.0, 0.5]]]])


def test_unknown_corruption(photos):
    with pytest.raises(ValueError, match="unknown corruption"):
        gen.corrupt(photos, "snow", 1, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# Generated folders
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cmnist_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("cm")
    write_mnist(root / "MNIST", N_MNIST_TRAIN, N_MNIST_TEST)
    gen.make_cmnist(root / "MNIST", root / "out", pcts=(1, 5), severity=4, valid_fraction=0.1, seed=0)
    return root


def test_cmnist_layout_and_metadata(cmnist_out):
    folder = cmnist_out / "out" / "cmnist"
    assert sorted(p.name for p in folder.iterdir()) == ["1pct", "5pct", "metadata.json", "test"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["sigma"] == 0.005 and meta["bias_names"][0] == "red"
    assert (
        meta["counts"]["1pct"]["n_valid"] == 20
        and meta["counts"]["5pct"]["n_align"] + meta["counts"]["5pct"]["n_conflict"] == 180
    )
    for path in (folder / "5pct" / "align").rglob("*.png"):
        _, y, b = path.stem.split("_")
        assert y == b == path.parent.name
    for path in (folder / "5pct" / "conflict").rglob("*.png"):
        _, y, b = path.stem.split("_")
        assert y != b and y == path.parent.name
    assert all(p.is_file() for p in (folder / "1pct" / "valid").iterdir())  # flat for cmnist
    assert len(list((folder / "test").rglob("*.png"))) == N_MNIST_TEST
    assert not (cmnist_out / "out" / "cmnist.partial").exists()


def test_cmnist_loads_with_the_generated_counts(cmnist_out):
    written = write_mnist(cmnist_out / "again", N_MNIST_TRAIN, N_MNIST_TEST)  # same content as MNIST/
    digits = written["train"][1]
    bundle = load_cmnist({"conflict_pct": 5}, cmnist_out / "out")
    train, val, test = (bundle.splits[s] for s in ("train", "val", "test"))
    assert len(train) + len(val) == N_MNIST_TRAIN and len(val) == 20 and len(test) == N_MNIST_TEST
    meta = json.loads((cmnist_out / "out" / "cmnist" / "metadata.json").read_text())
    valid_ids = sorted(int(p.stem.split("_")[0]) for p in (cmnist_out / "out" / "cmnist" / "5pct" / "valid").iterdir())
    train_ids = np.setdiff1d(np.arange(N_MNIST_TRAIN), valid_ids)
    expected = gen.make_attr_labels(digits[train_ids], 0.95)
    got = torch.bincount(train.groups, minlength=100)
    assert got.tolist() == np.bincount(digits[train_ids] * 10 + expected, minlength=100).tolist()
    assert (
        bundle.info.extra["n_conflict"]
        == meta["counts"]["5pct"]["n_conflict"]
        == int((expected != digits[train_ids]).sum())
    )
    assert torch.bincount(test.bias, minlength=10).tolist() == [10] * 10  # ρ_a = 0.1 on 10 per class
    # the colour of each image is its bias value's, on the 255-valued block of the fixture digit
    for i in range(0, len(test), 7):
        y, b = int(test.labels[i]), int(test.bias[i])
        row, col = 2 + 10 * (y // 5), 2 + 5 * (y % 5)
        pixel = test.images[i, :, row + 1, col + 1].numpy().astype(int)
        assert np.abs(pixel - gen.COLORS[b] * 255).max() <= 0.005 * 255 * 5 + 1


def test_cmnist_is_deterministic_and_refuses_to_overwrite(cmnist_out, tmp_path):
    with pytest.raises(DataError, match="already exists"):
        gen.make_cmnist(cmnist_out / "MNIST", cmnist_out / "out", pcts=(1,))
    gen.make_cmnist(cmnist_out / "MNIST", tmp_path, pcts=(1, 5), seed=0)
    for path in (cmnist_out / "out" / "cmnist" / "1pct").rglob("*.png"):
        twin = tmp_path / "cmnist" / path.relative_to(cmnist_out / "out" / "cmnist")
        assert np.array_equal(read_png(path), read_png(twin))
    gen.make_cmnist(cmnist_out / "MNIST", tmp_path, pcts=(2,), seed=1, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "cmnist").iterdir()) == ["2pct", "metadata.json", "test"]


def test_generator_argument_errors(cmnist_out, tmp_path):
    with pytest.raises(DataError, match="severity"):
        gen.make_cmnist(cmnist_out / "MNIST", tmp_path, severity=6)
    with pytest.raises(DataError, match="conflict percentages"):
        gen.make_cmnist(cmnist_out / "MNIST", tmp_path, pcts=(3,))
    with pytest.raises(DataError, match="valid_fraction"):
        gen.make_cmnist(cmnist_out / "MNIST", tmp_path, valid_fraction=0)
    with pytest.raises(DataError, match="severity"):
        gen.make_cifar10c(tmp_path, tmp_path, severity=5)
    with pytest.raises(DataError, match=r"'cifar10'.*data_batch_1"):
        gen.make_cifar10c(tmp_path / "none", tmp_path)


def test_cifar_reader(tmp_path):
    train = write_cifar(tmp_path)["train"]
    sources = gen._read_cifar_batches(tmp_path)
    assert np.array_equal(sources["train"][0], train) and sources["test"][0].shape == (100, 32, 32, 3)
    assert sources["train"][1][:3].tolist() == [0, 3, 6]
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch"):
        gen._read_cifar_batches(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="'data' and 'labels'"):
        gen._read_cifar_batches(tmp_path)


def test_cifar10c_generated_and_loaded(tmp_path):
    train = write_cifar(tmp_path / "cifar")["train"]
    out = gen.make_cifar10c(tmp_path / "cifar", tmp_path / "data", pcts=(5,), severity=4, seed=0)
    valid = out / "5pct" / "valid"
    assert all(p.is_dir() for p in valid.iterdir())  # nested for cifar10c
    bundle = load_cifar10c({"conflict_pct": 5}, tmp_path / "data")
    assert bundle.info.bias_names == list(gen.CORRUPTIONS) and bundle.info.extra["generator"]["level"] == 5
    assert len(bundle.splits["train"]) == 90 and len(bundle.splits["val"]) == 10 and len(bundle.splits["test"]) == 100
    assert bundle.info.extra["n_conflict"] == 0  # 9 per class at 5 %: round(9 · 0.95) = 9 aligned; the folder exists
    assert torch.bincount(bundle.splits["test"].bias, minlength=10).tolist() == [10] * 10
    # the deterministic corruptions can be recomputed from the source image
    checked = 0
    for path in (out / "5pct" / "align").rglob("*.png"):
        i, _, b = (int(t) for t in path.stem.split("_"))
        name = gen.CORRUPTIONS[b]
        if name in ("contrast", "brightness", "saturate", "jpeg", "pixelate", "gaussian_blur"):
            expected = gen.corrupt(train[i : i + 1], name, 5, np.random.default_rng(0))[0]
            assert np.array_equal(read_png(path), expected), name
            checked += 1
    assert checked >= 30


# ---------------------------------------------------------------------------------------------
# CLI commands
# ---------------------------------------------------------------------------------------------


def test_make_cmnist_command(tmp_path):
    write_mnist(tmp_path / "MNIST", N_MNIST_TRAIN, N_MNIST_TEST)
    runner = CliRunner()
    result = runner.invoke(make_cmnist_command, ["--data-root", str(tmp_path), "--pct", "1", "--severity", "2"])
    assert result.exit_code == 0, result.output
    assert "cmnist" in result.output and (tmp_path / "cmnist" / "1pct" / "align").is_dir()
    assert json.loads((tmp_path / "cmnist" / "metadata.json").read_text())["sigma"] == 0.02
    result = runner.invoke(make_cmnist_command, ["--data-root", str(tmp_path), "--pct", "3"])
    assert result.exit_code == 2 and "3" in result.output
    result = runner.invoke(make_cmnist_command, ["--data-root", str(tmp_path)])
    assert isinstance(result.exception, DataError)  # already exists; the data group prints it


def test_make_cifar10c_command(tmp_path):
    write_cifar(tmp_path / "src")
    result = CliRunner().invoke(
        make_cifar10c_command,
        ["--cifar", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--pct", "0.5", "--pct", "2", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o" / "cifar10c").iterdir()) == [
        "0.5pct",
        "2pct",
        "metadata.json",
        "test",
    ]


def test_a_pct_does_not_depend_on_the_others_made(cmnist_out, tmp_path):
    gen.make_cmnist(cmnist_out / "MNIST", tmp_path, pcts=(5,), seed=0)
    for path in (cmnist_out / "out" / "cmnist" / "5pct").rglob("*.png"):
        twin = tmp_path / "cmnist" / path.relative_to(cmnist_out / "out" / "cmnist")
        assert np.array_equal(read_png(path), read_png(twin))
