"""The HDF5 dataset cache: exact round trips, the decorator, the fingerprint, fork safety, atomicity."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import Field

from robust.config import DatasetConfig
from robust.data import ArraySplit, DatasetBundle, DatasetInfo, StreamSplit
from robust.errors import DataError
from robust.loader import BatchLoader, batch_reader
from robust_datasets import commands, h5cache
from robust_datasets.h5cache import H5Split, cache_path, cached_dataset, fingerprint, read_cache, write_cache
from robust_datasets.imagefiles import ImageFileSplit, Resize

ARRAYS = ("images", "labels", "groups", "bias", "masks", "bboxes")


class ToyConfig(DatasetConfig):
    size: int = Field(8, ge=4)
    seed: int = 0
    in_memory: Literal["auto", "yes", "no"] = "auto"
    memory_limit_gb: float = Field(4.0, gt=0)


def toy_info(size: int, **extra) -> DatasetInfo:
    return DatasetInfo(
        name="toy",
        num_classes=2,
        input_shape=(3, size, size),
        class_names=["a", "b"],
        group_names=["a0", "a1", "b0", "b1"],
        bias_names=["zero", "one"],
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        train_augment="flip",
        extra={"note": "toy", "sizes": [1, 2]},
    )


def array_split(n: int, size: int, rng: np.random.Generator, masks: bool) -> ArraySplit:
    labels = torch.from_numpy(rng.integers(0, 2, n))
    bias = torch.from_numpy(rng.integers(0, 2, n))
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    return ArraySplit(
        labels=labels,
        groups=labels * 2 + bias,
        bias=bias,
        images=images,
        masks=torch.from_numpy(rng.integers(0, 2, (n, 1, size, size), dtype=np.uint8) * 255) if masks else None,
        bboxes=torch.from_numpy(rng.integers(0, size, (n, 4))) if masks else None,
    )


def toy_build(config: ToyConfig, data_root: Path) -> DatasetBundle:
    rng = np.random.default_rng(config.seed)
    size = config.size
    splits = {
        "train": array_split(20, size, rng, masks=True),
        "val": array_split(7, size, rng, masks=False),
        "test": array_split(9, size, rng, masks=False),
        "test_extra": array_split(3, size, rng, masks=False),
    }
    return DatasetBundle(toy_info(size), splits, aux={"meta": array_split(4, size, rng, masks=False)})


def tensors(split) -> dict[str, torch.Tensor]:
    if isinstance(split, StreamSplit):  # decode every item, as the loader would
        images, masks = zip(*(split.read(i) for i in range(len(split))), strict=True)
        split = ArraySplit(
            labels=split.labels,
            groups=split.groups,
            bias=split.bias,
            bboxes=split.bboxes,
            images=torch.stack(images),
            masks=torch.stack(masks) if masks[0] is not None else None,
        )
    return {a: getattr(split, a) for a in ARRAYS if getattr(split, a) is not None}


def assert_same_bundle(a: DatasetBundle, b: DatasetBundle) -> None:
    assert a.info == b.info
    assert list(a.splits) == list(b.splits) and list(a.aux) == list(b.aux)
    for name in [*a.splits, *a.aux]:
        ta = tensors(a.splits.get(name) or a.aux[name])
        tb = tensors(b.splits.get(name) or b.aux[name])
        assert ta.keys() == tb.keys(), name
        for key in ta:
            assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{name}.{key}"


def write_png_folder(root: Path, n: int, rng: np.random.Generator) -> tuple[list[Path], list[Path | None]]:
    """n images of varied sizes (PNG and JPEG), and a mask for every other one."""
    paths, mask_paths = [], []
    for i in range(n):
        h, w = int(rng.integers(10, 30)), int(rng.integers(10, 30))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        path = root / "images" / f"{i:03d}.{'png' if i % 3 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
        if i % 2:
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : h // 2, w // 3 : w // 2] = 255
            mask_path = root / "masks" / f"{i:03d}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
            mask_paths.append(mask_path)
        else:
            mask_paths.append(None)
    return paths, mask_paths


@pytest.fixture
def image_bundle(tmp_path) -> DatasetBundle:
    rng = np.random.default_rng(0)
    paths, mask_paths = write_png_folder(tmp_path / "folder", 24, rng)
    labels = torch.from_numpy(rng.integers(0, 2, 24))
    bias = torch.from_numpy(rng.integers(0, 2, 24))
    resize = Resize(16)

    def split(part: slice, masks: bool) -> ImageFileSplit:
        return ImageFileSplit(
            paths[part],
            labels[part],
            resize,
            groups=(labels * 2 + bias)[part],
            bias=bias[part],
            mask_paths=mask_paths[part] if masks else None,
        )

    splits = {
        "train": split(slice(0, 12), True),
        "val": split(slice(12, 18), False),
        "test": split(slice(18, 24), False),
    }
    return DatasetBundle(toy_info(16), splits)


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_array_bundle_round_trip(tmp_path, compression):
    bundle = toy_build(ToyConfig(), tmp_path)
    path = write_cache(bundle, tmp_path / "toy.h5", fingerprint="abc", compression=compression)
    for policy in ("yes", "no", "auto"):
        again = read_cache(path, in_memory=policy, expected_fingerprint="abc")
        kinds = {type(s) for s in again.splits.values()}
        assert kinds == ({ArraySplit} if policy != "no" else {H5Split})
        assert_same_bundle(bundle, again)
    assert again.info.train_group_counts == bundle.info.train_group_counts and again.info.has_masks


def test_image_folder_round_trip(tmp_path, image_bundle):
    decoded = DatasetBundle(image_bundle.info, {k: s.load() for k, s in image_bundle.splits.items()})
    assert decoded.splits["train"].bboxes is not None  # derived from the masks by ImageFileSplit.load
    path = write_cache(image_bundle, tmp_path / "folder.h5", threads=3)
    for policy in ("yes", "no"):
        assert_same_bundle(decoded, read_cache(path, in_memory=policy))
    # Threads or not, chunked writes give the same file content.
    h5cache_chunk = h5cache.WRITE_CHUNK
    try:
        h5cache.WRITE_CHUNK = 5  # several chunks per split, and a partial last one
        path1 = write_cache(image_bundle, tmp_path / "one-thread.h5", threads=1)
    finally:
        h5cache.WRITE_CHUNK = h5cache_chunk
    assert_same_bundle(decoded, read_cache(path1, in_memory="yes"))


def test_h5_layout_and_attributes(tmp_path):
    import h5py

    bundle = toy_build(ToyConfig(), tmp_path)
    path = write_cache(bundle, tmp_path / "toy.h5", fingerprint="f" * 16, options={"size": 8})
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format_version"] == h5cache.FORMAT_VERSION
        assert handle.attrs["fingerprint"] == "f" * 16
        images = handle["splits/train/images"]
        assert images.dtype == np.uint8 and images.shape == (20, 3, 8, 8)
        assert images.chunks is None and images.compression is None  # contiguous: mapped by readers
        assert handle["splits/train/masks"].shape == (20, 1, 8, 8) and handle["splits/train/masks"].chunks is None
        assert "masks" not in handle["splits/val"] and "bboxes" not in handle["splits/val"]
        assert handle["aux/meta/labels"].dtype == np.int64
    readers = read_cache(path, in_memory="no").splits["train"]._datasets()
    assert all(reader.mapped is not None for reader in readers)
    lzf = write_cache(bundle, tmp_path / "lzf.h5", compression="lzf")
    with h5py.File(lzf, "r") as handle:  # HDF5 compresses chunks only: one image per chunk
        assert handle["splits/train/images"].chunks == (1, 3, 8, 8)
        assert handle["splits/train/images"].compression == "lzf"


def test_unstorable_info_is_a_clear_error(tmp_path):
    bundle = toy_build(ToyConfig(), tmp_path)
    bundle.info.extra["bad"] = object()
    with pytest.raises(DataError, match="JSON"):
        write_cache(bundle, tmp_path / "toy.h5")
    assert not (tmp_path / "toy.h5").exists()


# -- fingerprint and decorator ----------------------------------------------------------------------


def test_fingerprint_follows_data_options_only(tmp_path):
    base = fingerprint("toy", ToyConfig())
    assert base == fingerprint("toy", ToyConfig(in_memory="no", memory_limit_gb=0.5))
    assert base == fingerprint("toy", {"size": 8, "seed": 0})  # a mapping hashes the same
    assert base != fingerprint("toy", ToyConfig(size=16))
    assert base != fingerprint("toy", ToyConfig(seed=1))
    assert base != fingerprint("other", ToyConfig())
    assert base != fingerprint("toy", ToyConfig(), version=2)
    assert cache_path(tmp_path, "toy", ToyConfig()) == tmp_path / ".cache" / f"toy-{base}.h5"


def test_cache_file_naming_matches_commands(tmp_path):
    assert commands.CACHE_DIR == h5cache.CACHE_DIR
    for name in ("cifar10", "cifar10-lt"):
        path = cache_path(tmp_path, name, None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert [p.name.startswith("cifar10-lt-") for p in h5cache.cache_files(tmp_path, "cifar10-lt")] == [True]
    assert len(h5cache.cache_files(tmp_path, "cifar10")) == 1  # not cifar10-lt's file
    assert commands._cache_files(tmp_path, "cifar10") == h5cache.cache_files(tmp_path, "cifar10")


def test_cached_dataset_reads_the_cache_when_present(tmp_path, caplog):
    calls = []

    def build(config, data_root):
        calls.append(config)
        return toy_build(config, data_root)

    load = cached_dataset("toy", config_class=ToyConfig)(build)
    assert load.build is build and load.__name__ == "build"
    first = load(ToyConfig(), tmp_path)  # no cache: built
    assert len(calls) == 1

    path = h5cache.build_cache("toy", load, ToyConfig(), tmp_path)
    assert path == cache_path(tmp_path, "toy", ToyConfig()) and len(calls) == 2
    cached = load(ToyConfig(), tmp_path)
    assert len(calls) == 2  # read from the file
    assert_same_bundle(first, cached)
    assert all(isinstance(s, ArraySplit) for s in cached.splits.values())
    assert all(isinstance(s, H5Split) for s in load(ToyConfig(in_memory="no"), tmp_path).splits.values())
    tiny = load(ToyConfig(memory_limit_gb=1e-9), tmp_path)  # auto, over the limit: streamed
    assert all(isinstance(s, H5Split) for s in tiny.splits.values())
    assert len(calls) == 2
    load({"size": 8}, tmp_path)  # a mapping: validated with the config class, same fingerprint
    assert len(calls) == 2

    load(ToyConfig(seed=3), tmp_path)  # other data options: no cache for them
    assert len(calls) == 3

    path.write_bytes(b"not an HDF5 file")  # a broken cache is reported and bypassed
    with caplog.at_level(logging.WARNING, logger="robust_datasets.h5cache"):
        assert_same_bundle(first, load(ToyConfig(), tmp_path))
    assert len(calls) == 4 and "unreadable" in caplog.text


def test_wrong_format_version_is_not_read(tmp_path, monkeypatch):
    path = write_cache(toy_build(ToyConfig(), tmp_path), tmp_path / "toy.h5")
    monkeypatch.setattr(h5cache, "FORMAT_VERSION", h5cache.FORMAT_VERSION + 1)
    with pytest.raises(DataError, match="format version"):
        read_cache(path)


# -- streaming ------------------------------------------------------------------------------------


def test_h5split_streams_through_dataloader_workers(tmp_path):
    bundle = toy_build(ToyConfig(size=12), tmp_path)
    path = write_cache(bundle, tmp_path / "toy.h5")
    streamed = read_cache(path, in_memory="no")
    train = streamed.splits["train"]
    assert isinstance(train, H5Split)
    train.read(0)  # the parent opens the file first: workers must not read through its handle
    assert train._handle is not None
    clone = pickle.loads(pickle.dumps(train))  # spawned workers: no handle travels
    assert clone._handle is None and torch.equal(clone.read(3)[0], bundle.splits["train"].images[3])

    loader = BatchLoader(train, streamed.info, torch.device("cpu"), batch_size=4, num_workers=2)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    seen_x, seen_index, seen_mask = [], [], []
    for batch in loader.batches(order):
        seen_x.append(batch.x)
        seen_index.append(batch.index)
        seen_mask.append(batch.mask)
    index = torch.cat(seen_index)
    assert torch.equal(index, order)
    reference = BatchLoader(bundle.splits["train"], bundle.info, torch.device("cpu"), batch_size=4)
    expected = torch.cat([b.x for b in reference.batches(order)])
    assert torch.equal(torch.cat(seen_x), expected)
    assert torch.equal(torch.cat(seen_mask), bundle.splits["train"].masks[order].float() / 255)
    assert torch.equal(train.load().images, bundle.splits["train"].images)


def chunked_per_image(group, key, n, shape, compression):
    """The layout of files written before the contiguous one: one image per chunk."""
    if n == 0:
        return group.create_dataset(key, shape=(0, *shape), dtype=np.uint8)
    return group.create_dataset(key, shape=(n, *shape), dtype=np.uint8, chunks=(1, *shape), compression=compression)


@pytest.fixture(params=["contiguous", "chunked", "lzf"])
def streamed_toy(request, tmp_path, monkeypatch):
    """(written bundle, the same read back as H5Splits) in each layout a cache file can have."""
    if request.param == "chunked":
        monkeypatch.setattr(h5cache, "_image_dataset", chunked_per_image)
    bundle = toy_build(ToyConfig(size=12), tmp_path)
    compression = "lzf" if request.param == "lzf" else None
    path = write_cache(bundle, tmp_path / f"{request.param}.h5", compression=compression)
    streamed = read_cache(path, in_memory="no")
    mapped = streamed.splits["train"]._datasets()[0].mapped is not None
    assert mapped == (request.param == "contiguous")
    return bundle, streamed


def test_read_batch_gives_the_bytes_of_read(streamed_toy):
    """A batch read (mapped gather, chunk reads, or runs of HDF5 reads) is the per-item reads stacked."""
    bundle, streamed = streamed_toy
    train = streamed.splits["train"]
    for indices in ([5, 0, 19, 5, 6, 7, 8, 2], list(range(20)), [3], []):
        index = torch.tensor(indices, dtype=torch.long)
        images, masks = train.read_batch(index)
        items = [train.read(i) for i in indices]
        expected_images = torch.stack([img for img, _ in items]) if items else torch.empty(0, 3, 12, 12)
        expected_masks = torch.stack([m for _, m in items]) if items else torch.empty(0, 1, 12, 12)
        assert images.dtype == masks.dtype == torch.uint8
        assert torch.equal(images, expected_images.to(torch.uint8)) and torch.equal(
            masks, expected_masks.to(torch.uint8)
        )
        assert torch.equal(images, bundle.splits["train"].images[index])
        assert torch.equal(masks, bundle.splits["train"].masks[index])
    buffers = {}  # into given buffers (the loader's reused ones): filled in place

    def empty(name, shape):
        buffers[name] = torch.full((8, *shape[1:]), 7, dtype=torch.uint8)
        return buffers[name][: shape[0]]

    images, masks = train.read_batch(torch.tensor([4, 1, 2]), empty)
    assert images.data_ptr() == buffers["images"].data_ptr() and masks.data_ptr() == buffers["masks"].data_ptr()
    assert torch.equal(buffers["images"][:3], bundle.splits["train"].images[[4, 1, 2]])
    assert (buffers["images"][3:] == 7).all()
    val_images, val_masks = streamed.splits["val"].read_batch(torch.tensor([1, 0]))
    assert val_masks is None and torch.equal(val_images, bundle.splits["val"].images[[1, 0]])


class ItemByItem(StreamSplit):
    """An H5Split without read_batch: the loader's per-item DataLoader path, for comparison."""

    def __init__(self, split: H5Split) -> None:
        super().__init__(labels=split.labels, groups=split.groups, bias=split.bias, bboxes=split.bboxes)
        self.split = split

    def read(self, index: int):
        return self.split.read(index)


def test_batch_path_equals_the_item_path(streamed_toy):
    """Through the BatchLoader, whole-batch reads give the batches of per-item reads and of the
    in-memory split, byte for byte: uint8 images, masks, boxes, and the same augmentation draws."""
    from robust.data import with_labels

    bundle, streamed = streamed_toy
    train = streamed.splits["train"]
    assert isinstance(train, H5Split)
    info, device = streamed.info, torch.device("cpu")
    kwargs = {"batch_size": 6, "augmentation": "crop_flip", "num_workers": 0}
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    noisy = torch.flip(train.labels, (0,))
    splits = {
        "batched": train,
        "items": ItemByItem(train),
        "memory": bundle.splits["train"],
        "batched view": with_labels(train, noisy),  # a SubsetSplit over the H5Split: still batched
    }
    assert [batch_reader(split) is not None for split in splits.values()] == [True, False, False, True]
    raw, batches = {}, {}
    for name, split in splits.items():
        loader = BatchLoader(split, info, device, **kwargs)
        raw[name] = [(i.clone(), x.clone(), m.clone()) for i, x, m in loader.raw_batches(order, start=1)]
        batches[name] = list(loader.batches(order, start=1, generator=torch.Generator().manual_seed(3)))
    for name in splits:
        assert len(raw[name]) == len(batches[name]) == 3
        for (index, images, masks), (ref_index, ref_images, ref_masks) in zip(raw[name], raw["items"], strict=True):
            assert torch.equal(index, ref_index) and torch.equal(images, ref_images) and torch.equal(masks, ref_masks)
            assert images.dtype == torch.uint8
        for a, b in zip(batches[name], batches["items"], strict=True):
            for field in ("x", "index", "group", "bias", "mask", "bbox"):
                assert torch.equal(getattr(a, field), getattr(b, field)), (name, field)
            assert torch.equal(a.y, noisy[a.index] if name == "batched view" else b.y)
    assert torch.equal(torch.cat([i for i, _, _ in raw["batched"]]), order[6:])


def test_h5split_threads_share_one_handle(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    bundle = toy_build(ToyConfig(), tmp_path)
    split = read_cache(write_cache(bundle, tmp_path / "toy.h5"), in_memory="no").splits["train"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(lambda i: split.read(i)[0], list(range(len(split))) * 3))
    assert torch.equal(torch.stack(images[: len(split)]), bundle.splits["train"].images)
    assert all(torch.equal(a, b) for a, b in zip(images, images[len(split) :] * 2, strict=False))


# -- atomicity ------------------------------------------------------------------------------------


class FailingSplit(StreamSplit):
    """Decodes fine until ``fail_at``, then raises: a corrupt file found mid-write."""

    def __init__(self, n: int, fail_at: int) -> None:
        super().__init__(labels=torch.zeros(n, dtype=torch.long))
        self.fail_at = fail_at

    def read(self, index: int):
        if index == self.fail_at:
            raise DataError(f"Image file 'img{index}.jpg' is corrupt.")
        return torch.full((3, 8, 8), index, dtype=torch.uint8), None


@pytest.mark.parametrize("threads", [1, 4])
def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(h5cache, "WRITE_CHUNK", 4)  # the failure comes after chunks were written
    good = toy_build(ToyConfig(), tmp_path).splits["val"]
    bundle = DatasetBundle(toy_info(8), {"train": FailingSplit(30, fail_at=21), "val": good, "test": good})
    target = tmp_path / "out" / "toy.h5"
    with pytest.raises(DataError, match="img21"):
        write_cache(bundle, target, threads=threads)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind either


def test_split_with_mixed_image_sizes_is_rejected(tmp_path):
    class Mixed(FailingSplit):
        def read(self, index: int):
            size = 8 if index < 5 else 9
            return torch.zeros((3, size, size), dtype=torch.uint8), None

    split = Mixed(8, fail_at=-1)
    bundle = DatasetBundle(toy_info(8), {"train": split, "val": split, "test": split})
    with pytest.raises(DataError, match="share one size"):
        write_cache(bundle, tmp_path / "toy.h5")
    assert not (tmp_path / "toy.h5").exists()
