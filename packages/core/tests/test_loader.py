"""Batching: device-resident indexing and DataLoader streaming give the same batches."""

from __future__ import annotations

import pytest
import torch

from robust.data import ArraySplit, StreamSplit
from robust.loader import BatchLoader

from .tiny import TinyConfig, load_tiny


class StreamedFromArrays(StreamSplit):
    """A streaming split that reads from arrays (stands in for images decoded from disk)."""

    def __init__(self, split: ArraySplit) -> None:
        super().__init__(labels=split.labels, groups=split.groups, bias=split.bias, bboxes=split.bboxes)
        self.images = split.images
        self.masks = split.masks

    def read(self, index: int):
        return self.images[index], self.masks[index]


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_equals_in_memory(workers):
    bundle = load_tiny(TinyConfig(), None)
    array = bundle.splits["train"]
    stream = StreamedFromArrays(array)
    device = torch.device("cpu")
    kwargs = {"batch_size": 20, "augmentation": "crop_flip", "num_workers": workers}
    in_memory = BatchLoader(array, bundle.info, device, **kwargs)
    streamed = BatchLoader(stream, bundle.info, device, **kwargs)
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(0))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = list(in_memory.batches(order, start=1, generator=gen_a))
    b = list(streamed.batches(order, start=1, generator=gen_b))
    assert len(a) == len(b) == in_memory.num_batches() - 1
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.index, y.index) and torch.equal(x.x, y.x) and torch.equal(x.mask, y.mask)
        assert torch.equal(x.bbox, y.bbox) and torch.equal(x.y, y.y)


class BatchedFromArrays(StreamedFromArrays):
    """A streaming split read a whole batch at a time (as an HDF5 cache is), never item by item."""

    def read(self, index: int):
        raise AssertionError("read item by item")

    def read_batch(self, indices, empty):
        images = empty("images", (len(indices), *self.images.shape[1:]))
        masks = empty("masks", (len(indices), *self.masks.shape[1:]))
        return torch.index_select(self.images, 0, indices, out=images), torch.index_select(
            self.masks, 0, indices, out=masks
        )


def test_batch_reads_equal_in_memory():
    """read_batch (also through a subset view) gives the in-memory batches, and an epoch left early
    stops its read-ahead thread."""
    import threading

    from robust.data import with_labels

    bundle = load_tiny(TinyConfig(), None)
    array = bundle.splits["train"]
    device = torch.device("cpu")
    kwargs = {"batch_size": 20, "augmentation": "crop_flip", "num_workers": 2}
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(0))
    reference = list(
        BatchLoader(array, bundle.info, device, **kwargs).batches(order, generator=torch.Generator().manual_seed(1))
    )
    for split in (BatchedFromArrays(array), with_labels(BatchedFromArrays(array), array.labels)):
        loader = BatchLoader(split, bundle.info, device, **kwargs)
        batches = list(loader.batches(order, generator=torch.Generator().manual_seed(1)))
        assert len(batches) == len(reference) == 5
        for x, y in zip(reference, batches, strict=True):
            for field in ("x", "y", "index", "group", "bias", "mask", "bbox"):
                assert torch.equal(getattr(x, field), getattr(y, field)), field
    epoch = loader.batches(order)
    next(epoch)
    epoch.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("robust-read")]


def test_augmentation_moves_masks_and_boxes_with_images():
    bundle = load_tiny(TinyConfig(), None)
    split = bundle.splits["train"]
    loader = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=96, augmentation="crop_flip")
    batch = next(loader.batches(loader.sequential(), generator=torch.Generator().manual_seed(0)))
    # The tiny masks cover the top half exactly; after the same shift and flip, the box is still
    # the tight box of the mask.
    for mask, box in zip(batch.mask[:, 0], batch.bbox, strict=True):
        rows = mask.sum(1).nonzero().flatten()
        cols = mask.sum(0).nonzero().flatten()
        assert box.tolist() == [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]


def test_evaluation_batches_are_not_augmented_and_normalised():
    bundle = load_tiny(TinyConfig(), None)
    split = bundle.splits["val"]
    loader = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=64, augmentation="crop_flip")
    batch = next(loader.batches(loader.sequential()))
    expected = (split.images[:40].float() / 255 - 0.5) / 0.5
    assert torch.allclose(batch.x, expected)


def test_crop_padding_bounds_the_shift():
    """A 32-px image with crop_padding 1 moves by at most one pixel (the default pad would be 4)."""
    from dataclasses import replace

    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 15:17, 15:17] = 255  # a centred square: its position reveals the shift
    split = ArraySplit(labels=torch.zeros(64, dtype=torch.long), images=images)
    info = replace(load_tiny(TinyConfig(), None).info, input_shape=(3, 32, 32), mean=(0.0,) * 3, std=(1.0,) * 3)
    for pad, limit in ((1, 1), (None, 4)):
        loader = BatchLoader(
            split, replace(info, crop_padding=pad), torch.device("cpu"), batch_size=64, augmentation="crop_flip"
        )
        batch = next(loader.batches(loader.sequential(), generator=gen))
        rows = batch.x[:, 0].amax(dim=2).argmax(dim=1)  # first row of the square
        assert (rows - 15).abs().max().item() == limit


def test_drop_last_keeps_only_full_batches():
    bundle = load_tiny(TinyConfig(), None)  # 96 training samples
    loader = BatchLoader(bundle.splits["train"], bundle.info, torch.device("cpu"), batch_size=40)
    assert loader.num_batches() == 3 and loader.num_batches(drop_last=True) == 2
    sizes = [len(b.y) for b in loader.batches(loader.sequential(), drop_last=True)]
    assert sizes == [40, 40]


def test_batch_transforms_apply_to_training_batches_only():
    """A batch transform (robust-rare's train.input_noise is one) draws from the training generator:
    reproducible; evaluation batches (no generator) are left alone."""
    bundle = load_tiny(TinyConfig(), None)
    split = bundle.splits["train"]
    plain = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=96)

    def noise(x, gen):
        return x + 0.2 * torch.randn(x.shape, generator=gen, device=x.device)

    noisy = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=96, batch_transforms=[noise])
    order = plain.sequential()
    clean = next(plain.batches(order, generator=torch.Generator().manual_seed(0))).x
    a = next(noisy.batches(order, generator=torch.Generator().manual_seed(0))).x
    b = next(noisy.batches(order, generator=torch.Generator().manual_seed(0))).x
    assert torch.equal(a, b) and not torch.equal(a, clean)  # drawn from the training generator: reproducible
    assert torch.equal(next(noisy.batches(order)).x, clean)  # evaluation: no generator, no noise


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_batches_on_cuda_equal_the_cpu_batches():
    """Gathered into reused pinned buffers and copied without blocking, the batches on the GPU are the
    CPU's: a buffer is never refilled before its copy has finished."""
    bundle = load_tiny(TinyConfig(), None)
    array = bundle.splits["train"]
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(0)).repeat(4)
    reference = list(BatchLoader(array, bundle.info, torch.device("cpu"), batch_size=8).batches(order))
    for split in (array, BatchedFromArrays(array)):
        loader = BatchLoader(split, bundle.info, torch.device("cuda"), batch_size=8, data_on_device="no")
        batches = [(b.x.clone(), b.mask.clone(), b.index.clone()) for b in loader.batches(order)]
        assert len(batches) == len(reference)
        for (x, mask, index), ref in zip(batches, reference, strict=True):
            assert torch.equal(index.cpu(), ref.index) and torch.equal(mask.cpu(), ref.mask)
            assert torch.allclose(x.cpu(), ref.x, atol=1e-6)


def test_take_rows_gathers_like_indexing_and_checks_bounds():
    from robust.loader import take_rows

    source = torch.arange(5 * 2 * 3, dtype=torch.uint8).view(5, 2, 3)
    index = torch.tensor([4, 0, 0, 2])
    out = torch.empty(6, 2, 3, dtype=torch.uint8)[:4]
    assert take_rows(source, index, out) is out and torch.equal(out, source[index])
    for bad in ([5], [-1]):  # numpy's mode="clip" would clamp them: refused instead
        with pytest.raises(IndexError):
            take_rows(source, torch.tensor(bad), torch.empty(1, 2, 3, dtype=torch.uint8))
