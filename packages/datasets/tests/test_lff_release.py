"""cmnist / cifar10c / bffhq in DisEnt's released PNG layout, from tiny hand-made folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from robust.errors import DataError
from robust_datasets import lff_release as lr
from robust_datasets.testing import write_lff_release


def save(path: Path, size: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def counts(pairs: list[tuple], classes: int) -> list[int]:
    out = [0] * classes * classes
    for y, b in pairs:
        out[y * classes + b] += 1
    return out


@pytest.mark.parametrize("name", ["cmnist", "cifar10c"])
def test_cmnist_cifar10c_layout(tmp_path, name):
    written = write_lff_release(tmp_path, name, pcts=("1pct", "5pct"))
    loader = lr.load_cmnist if name == "cmnist" else lr.load_cifar10c
    bundle = loader({"conflict_pct": 1, "image_size": 8}, tmp_path)
    for split in ("train", "val", "test"):
        s = bundle.splits[split]
        assert torch.bincount(s.groups, minlength=100).tolist() == counts(written[split], 10), split
        assert torch.equal(s.groups, s.labels * 10 + s.bias)
        assert torch.equal(s.images[:, 0, 0, 0], s.labels * 10 + s.bias)  # the image is the one named
    info = bundle.info
    assert info.input_shape == (3, 8, 8) and info.num_classes == 10 and len(info.group_names) == 100
    assert info.extra["n_align"] == 20 and info.extra["n_conflict"] == 10
    train = bundle.splits["train"]
    assert int((train.labels == train.bias).sum()) == 20
    if name == "cmnist":
        assert info.train_augment == "none" and info.mean == (0.0, 0.0, 0.0) and info.bias_names[0] == "red"
    else:
        assert info.train_augment == "crop_flip" and info.mean == lr.CIFAR_MEAN
        assert info.bias_names == [f"corruption{b}" for b in range(10)] and info.class_names[0] == "airplane"


def test_bffhq_layout_keeps_aligned_test(tmp_path):
    written = write_lff_release(tmp_path, "bffhq", pcts=("0.5pct",), classes=2, size=12)
    bundle = lr.load_bffhq({"image_size": 16}, tmp_path)
    test = bundle.splits["test"]
    assert len(test) == 4 and int((test.labels == test.bias).sum()) == 2  # aligned kept; conflicting_acc filters
    assert torch.bincount(bundle.splits["train"].groups, minlength=4).tolist() == counts(written["train"], 2)
    assert len(bundle.splits["val"]) == 2
    assert bundle.splits["train"].images.shape[1:] == (3, 16, 16)  # resized to image_size
    info = bundle.info
    assert info.group_names == ["young_female", "young_male", "old_female", "old_male"]
    assert info.std == lr.CIFAR_STD and info.train_augment == "crop_flip"
    with pytest.raises(ValidationError):
        lr.LfFBFFHQConfig(conflict_pct=1)


def test_default_sizes_and_pct_folders():
    assert lr.LfFCMNISTConfig().image_size == 28 and lr.LfFCIFAR10CConfig().image_size == 32
    assert lr.LfFBFFHQConfig().image_size == 224
    assert [lr.pct_folder(p) for p in lr.PCTS] == ["0.5pct", "1pct", "2pct", "5pct"]
    with pytest.raises(ValidationError):
        lr.LfFCMNISTConfig(conflict_pct=3)


def test_streams_when_not_in_memory(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    bundle = lr.load_cmnist({"in_memory": "no", "image_size": 8}, tmp_path)
    test = bundle.splits["test"]
    image, mask = test.read(5)
    assert image.shape == (3, 8, 8) and mask is None
    assert int(image[0, 0, 0]) == int(test.labels[5] * 10 + test.bias[5])


def test_generator_metadata_names_the_bias(tmp_path):
    write_lff_release(tmp_path, "cifar10c")
    names = [f"c{b}" for b in range(10)]
    (tmp_path / "cifar10c" / "metadata.json").write_text(json.dumps({"bias_names": names, "level": 5}))
    bundle = lr.load_cifar10c({"image_size": 8}, tmp_path)
    assert bundle.info.bias_names == names and bundle.info.group_names[1] == "airplane_c1"
    assert bundle.info.extra["generator"]["level"] == 5


def test_root_option(tmp_path):
    write_lff_release(tmp_path / "elsewhere", "cmnist")
    bundle = lr.load_cmnist({"root": str(tmp_path / "elsewhere" / "cmnist"), "image_size": 8}, tmp_path / "nothing")
    assert len(bundle.splits["train"]) == 30


def test_missing_folder(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    with pytest.raises(DataError, match=r"'cmnist'.*Not found: 2pct/align/"):
        lr.load_cmnist({"conflict_pct": 2}, tmp_path)
    with pytest.raises(DataError, match="make-cifar10c"):
        lr.load_cifar10c({}, tmp_path)


def test_empty_split_folder(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    for f in (tmp_path / "cmnist" / "1pct" / "valid").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="No image files under 1pct/valid"):
        lr.load_cmnist({"image_size": 8}, tmp_path)


def test_corrupt_image(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    bad = next((tmp_path / "cmnist" / "test" / "3").iterdir())
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=bad.name):
        lr.load_cmnist({"image_size": 8}, tmp_path)


def test_bad_file_names(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    save(tmp_path / "cmnist" / "1pct" / "align" / "0" / "noise.png", 8, 0)
    with pytest.raises(DataError, match=r"noise.png.*<id>_<target>_<bias>"):
        lr.load_cmnist({"image_size": 8}, tmp_path)
    (tmp_path / "cmnist" / "1pct" / "align" / "0" / "noise.png").unlink()
    save(tmp_path / "cmnist" / "1pct" / "align" / "0" / "9_0_12.png", 8, 0)
    with pytest.raises(DataError, match="bias 12 out of range"):
        lr.load_cmnist({"image_size": 8}, tmp_path)


def test_misfiled_aligned_image_warns(tmp_path):
    write_lff_release(tmp_path, "cmnist")
    save(tmp_path / "cmnist" / "1pct" / "align" / "0" / "999_0_4.png", 8, 4)
    with pytest.warns(UserWarning, match="file names decide"):
        bundle = lr.load_cmnist({"image_size": 8}, tmp_path)
    assert bundle.info.extra["n_align"] == 21


def test_parse_name():
    assert lr.parse_name(Path("a_b/1234_3_8.png")) == (3, 8)
    with pytest.raises(DataError):
        lr.parse_name(Path("x/3.png"))


def test_registry_end_to_end(tmp_path):
    from robust.registry import get_registry

    write_lff_release(tmp_path, "cmnist", pcts=("0.5pct",))
    entry = get_registry().get("dataset", "cmnist")
    bundle = entry.load()(entry.load_config().model_validate({"conflict_pct": 0.5}), tmp_path)
    assert bundle.info.name == "cmnist" and len(bundle.splits["test"]) == 100


def test_cache_is_used_once_written(tmp_path):
    """`robust data cache` output is what the registered loader reads from then on."""
    from robust_datasets.h5cache import build_cache, cache_files

    write_lff_release(tmp_path, "cmnist")
    options = {"conflict_pct": 1, "image_size": 8}
    from_files = lr.load_cmnist(options, tmp_path)
    build_cache("cmnist", lr.load_cmnist, lr.LfFCMNISTConfig(**options), tmp_path)
    assert cache_files(tmp_path, "cmnist")
    for image in (tmp_path / "cmnist").rglob("*.png"):
        image.unlink()  # the files are gone: only the cache can answer
    from_cache = lr.load_cmnist(options, tmp_path)
    for split in ("train", "val", "test"):
        assert torch.equal(from_cache.splits[split].images, from_files.splits[split].images)
        assert torch.equal(from_cache.splits[split].groups, from_files.splits[split].groups)
