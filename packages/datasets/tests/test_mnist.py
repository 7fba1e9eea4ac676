"""mnist / fashion-mnist from tiny idx files in torchvision's raw layout (plain and gzip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust.errors import DataError
from robust_datasets import mnist
from robust_datasets.testing import MNIST_N_TEST, MNIST_N_TRAIN, digit_images, write_idx, write_mnist


def test_read_idx_round_trip_and_gzip(tmp_path):
    images = digit_images(np.arange(5))
    write_idx(tmp_path / "a", images, 2051)
    write_idx(tmp_path / "b.gz", images, 2051, gz=True)
    assert np.array_equal(mnist.read_idx(tmp_path / "a", 2051), images)
    assert np.array_equal(mnist.read_idx(tmp_path / "b.gz", 2051), images)


def test_load_mnist_raw_layout(tmp_path):
    written = write_mnist(tmp_path / "MNIST")
    bundle = mnist.load_mnist(mnist.MNISTConfig(n_val=20), tmp_path)
    train, val, test = (bundle.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (MNIST_N_TRAIN - 20, 20, MNIST_N_TEST)
    assert train.images.shape == (MNIST_N_TRAIN - 20, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(test.images[:, 0], torch.from_numpy(written["test"][0]))
    assert torch.equal(test.labels, torch.from_numpy(written["test"][1]))
    assert torch.equal(train.groups, train.labels) and train.bias is None
    # train + val are the training set, disjoint, every image exactly once
    together = torch.cat([train.images, val.images])[:, 0].reshape(MNIST_N_TRAIN, -1)
    original = torch.from_numpy(written["train"][0]).reshape(MNIST_N_TRAIN, -1)
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, original.tolist()))
    info = bundle.info
    assert info.input_shape == (1, 28, 28) and info.num_classes == 10 and info.mean == (0.0,)
    assert info.group_names == info.class_names == [str(d) for d in range(10)]
    assert info.train_group_counts == torch.bincount(train.labels, minlength=10).tolist()


def test_holdout_is_seeded(tmp_path):
    write_mnist(tmp_path / "MNIST")
    a = mnist.load_mnist({"n_val": 10, "seed": 1}, tmp_path)
    b = mnist.load_mnist({"n_val": 10, "seed": 1}, tmp_path)
    c = mnist.load_mnist({"n_val": 10, "seed": 2}, tmp_path)
    assert torch.equal(a.splits["val"].images, b.splits["val"].images)
    assert not torch.equal(a.splits["val"].images, c.splits["val"].images)


def test_n_val_zero_trains_on_everything(tmp_path):
    write_mnist(tmp_path / "MNIST")
    bundle = mnist.load_mnist({"n_val": 0}, tmp_path)
    assert len(bundle.splits["train"]) == MNIST_N_TRAIN
    assert bundle.splits["val"] is bundle.splits["test"] and bundle.info.extra["val_is_test"]


def test_gzip_files_directly_in_root(tmp_path):
    folder = tmp_path / "anywhere"
    write_mnist(folder, gz=True, raw=False)
    bundle = mnist.load_fashion_mnist({"root": str(folder), "n_val": 5}, tmp_path)
    assert len(bundle.splits["train"]) == MNIST_N_TRAIN - 5
    assert bundle.info.class_names[-1] == "Ankle boot"


def test_missing_file_names_dataset_and_files(tmp_path):
    write_mnist(tmp_path / "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"'mnist'.*t10k-labels-idx1-ubyte"):
        mnist.load_mnist({}, tmp_path)
    with pytest.raises(DataError, match=r"fashion-mnist.*FashionMNIST"):
        mnist.load_fashion_mnist({}, tmp_path)


def test_wrong_magic_truncated_and_mismatched_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(tmp_path / "MNIST")
    images = raw / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes((2049).to_bytes(4, "big") + good[4:])  # a labels magic on an images file
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        mnist.load_mnist({}, tmp_path)
    images.write_bytes(good[:-100])
    with pytest.raises(DataError, match="truncated"):
        mnist.load_mnist({}, tmp_path)
    images.write_bytes(good)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(MNIST_N_TRAIN - 1, np.uint8), 2049)
    with pytest.raises(DataError, match="different downloads"):
        mnist.load_mnist({}, tmp_path)
    write_mnist(tmp_path / "MNIST")
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="t10k-images"):
        mnist.read_mnist(tmp_path / "MNIST")


def test_n_val_too_large(tmp_path):
    write_mnist(tmp_path / "MNIST")
    with pytest.raises(DataError, match="n_val"):
        mnist.load_mnist({"n_val": MNIST_N_TRAIN}, tmp_path)


def test_registry_end_to_end(tmp_path):
    from robust.registry import get_registry

    write_mnist(tmp_path / "FashionMNIST")
    entry = get_registry().get("dataset", "fashion-mnist")
    config = entry.load_config().model_validate({"n_val": 10})
    bundle = entry.load()(config, tmp_path)
    assert len(bundle.splits["val"]) == 10 and bundle.info.name == "fashion-mnist"
    entry = get_registry().get("dataset", "mnist")
    write_mnist(tmp_path / "MNIST")
    assert entry.load()(entry.load_config()(n_val=3), tmp_path).info.name == "mnist"
