"""colored-mnist (IRM-style, as PruSC uses it) built from tiny MNIST idx files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from robust.errors import DataError
from robust_datasets import prusc_cmnist as pc
from robust_datasets.testing import write_mnist

N_TRAIN, N_TEST = 400, 200


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prusc")
    write_mnist(root / "MNIST", N_TRAIN, N_TEST)
    return root


def test_shapes_groups_and_info(root):
    bundle = pc.load({"n_val": 100}, root)
    assert [len(bundle.splits[s]) for s in ("train", "val", "test")] == [N_TRAIN - 100, 100, N_TEST]
    for split in bundle.splits.values():
        assert split.images.shape[1:] == (2, 14, 14) and split.images.dtype == torch.uint8
        assert torch.equal(split.groups, 2 * split.labels + split.bias)
    info = bundle.info
    assert info.input_shape == (2, 14, 14) and info.num_classes == 2 and info.mean == (0.0, 0.0)
    assert info.group_names == ["digit5-9_red", "digit5-9_green", "digit0-4_red", "digit0-4_green"]


def test_colour_channel_and_downsampling(root):
    written = write_mnist(root / "other", N_TRAIN, N_TEST)
    bundle = pc.load({"root": str(root / "other"), "n_val": 100, "label_noise": 0.0}, root)
    test = bundle.splits["test"]
    images, digits = written["test"]
    assert torch.equal(test.labels, torch.from_numpy((digits < 5).astype(np.int64)))  # no noise: y = 1[digit < 5]
    for i in range(N_TEST):
        c = int(test.bias[i])
        assert torch.equal(test.images[i, c], torch.from_numpy(images[i, ::2, ::2]))  # the colour's own channel
        assert not test.images[i, 1 - c].any()  # the other one is zero


def test_ratios_drive_the_colour(root):
    bundle = pc.load({"n_val": 100, "spurious_ratio": 0.0, "test_spurious_ratio": 1.0}, root)
    train, val, test = (bundle.splits[s] for s in ("train", "val", "test"))
    assert torch.equal(train.bias, train.labels) and torch.equal(val.bias, val.labels)  # colour = label
    assert torch.equal(test.bias, 1 - test.labels)  # fully reversed


def test_default_rates_roughly_hold(root):
    bundle = pc.load({"n_val": 100}, root)
    train, test = bundle.splits["train"], bundle.splits["test"]
    assert 0.05 < (train.bias != train.labels).float().mean() < 0.25  # e = 0.15
    assert (test.bias != test.labels).float().mean() > 0.8  # e = 0.9


def test_label_noise_and_clean_eval(tmp_path):
    written = write_mnist(tmp_path / "MNIST", 1000, 200)
    clean = torch.from_numpy((written["test"][1] < 5).astype(np.int64))
    noisy = pc.load({"n_val": 100}, tmp_path).splits["test"].labels
    assert 0.15 < (noisy != clean).float().mean() < 0.35  # 0.25
    kept = pc.load({"n_val": 100, "noisy_eval": False}, tmp_path)
    assert torch.equal(kept.splits["test"].labels, clean)
    assert len(kept.splits["train"]) == 900


def test_full_resolution_rgb_and_determinism(root):
    a = pc.load({"n_val": 100, "image_size": 28, "channels": 3}, root)
    assert a.splits["train"].images.shape[1:] == (3, 28, 28) and not a.splits["train"].images[:, 2].any()
    b = pc.load({"n_val": 100, "image_size": 28, "channels": 3}, root)
    c = pc.load({"n_val": 100, "image_size": 28, "channels": 3, "seed": 1}, root)
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert torch.equal(a.splits["train"].bias, b.splits["train"].bias)
    assert not torch.equal(a.splits["train"].labels, c.splits["train"].labels)


def test_bad_options_and_missing_files(tmp_path, root):
    with pytest.raises(ValidationError):
        pc.PruSCColoredMNISTConfig(image_size=20)
    with pytest.raises(ValidationError):
        pc.PruSCColoredMNISTConfig(label_noise=0.5)
    with pytest.raises(DataError, match="n_val"):
        pc.load({"n_val": N_TRAIN}, root)
    with pytest.raises(DataError, match=r"'colored-mnist'.*train-images-idx3-ubyte"):
        pc.load({}, tmp_path)


def test_registry_end_to_end(root):
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "colored-mnist")
    bundle = entry.load()(entry.load_config().model_validate({"n_val": 50}), root)
    assert bundle.info.name == "colored-mnist" and len(bundle.splits["val"]) == 50
