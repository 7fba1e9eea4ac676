"""Turning a split into device batches.

In-memory splits that fit are moved to the device once and batched by indexing (no worker
processes, no per-item Python: the airbench pattern); those that do not are gathered a batch at a
time into reused (on a GPU, pinned) buffers and copied without blocking. A streamed split with a
``read_batch(indices, empty) -> (images, masks)`` method (an HDF5 cache) is read the same way, a
whole batch per call, one batch ahead in a thread; ``empty(name, shape)`` hands it the buffer to fill.
Other streamed splits (image files) go through a DataLoader with worker processes and pinned
memory. Either way, the engine chooses the sample order (a tensor of indices), so that samplers,
resampling and mid-epoch resume are one thing, and the batches hold the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robust.augment import augment
from robust.data import ArraySplit, Batch, DatasetInfo, Split, StreamSplit, SubsetSplit
from robust.distributed import World, shard

DEVICE_MEMORY_FRACTION = 0.3  # of free GPU memory a split may take when data_on_device=auto


def fits_on_device(split: Split, device: torch.device, policy: str) -> bool:
    if not isinstance(split, ArraySplit) or policy == "no":
        return False
    if policy == "yes" or device.type == "cpu":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return split.nbytes < DEVICE_MEMORY_FRACTION * free


class _StreamItems(Dataset):
    """Index -> (index, image, mask) for DataLoader workers."""

    def __init__(self, split: StreamSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask = self.split.read(index)
        return index, image, mask


def _collate(items):
    indices = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    images = torch.stack([img for _, img, _ in items])
    masks = None if items[0][2] is None else torch.stack([m for _, _, m in items])
    return indices, images, masks


def take_rows(source: Tensor, index: Tensor, out: Tensor) -> Tensor:
    """Rows ``index`` of CPU tensor ``source`` into ``out``; returns ``out``.

    numpy's take, single-threaded and without the GIL: a gather is a memory copy, which torch's
    intra-op threads only slow down (``index_select`` ran 5-50x slower on a busy 2-core VM). Mode
    ``clip`` skips numpy's extra buffered copy; the bounds are checked here instead.
    """
    rows = index.numpy()
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= len(source)):
        raise IndexError(f"indices out of range for {len(source)} rows: {rows.min()}..{rows.max()}")
    np.take(source.numpy(), rows, axis=0, out=out.numpy(), mode="clip")
    return out


BatchReader = Callable[[Tensor, Callable[[str, tuple[int, ...]], Tensor]], tuple[Tensor, Tensor | None]]


def batch_reader(split: Split) -> BatchReader | None:
    """The split's ``read_batch``, through subset views (label noise, inferred groups); None if it has none."""
    if isinstance(split, SubsetSplit):
        base = batch_reader(split.base)
        if base is None:
            return None
        indices = split.indices
        return lambda index, empty: base(indices[index], empty)
    return getattr(split, "read_batch", None)


class _Staging:
    """A few reused uint8 batch buffers: gathering into them allocates nothing and faults in no pages.

    On a GPU they are pinned, so the copies to the device do not block; a slot is written again only
    once the copy from it has finished (its event). Three slots: one being read ahead, one being
    consumed, one whose copy may still be running.
    """

    SLOTS = 3

    def __init__(self, rows: int, device: torch.device) -> None:
        self.rows = rows
        self.device = device
        self.buffers: list[dict[str, Tensor]] = [{} for _ in range(self.SLOTS)]
        self.events: list[torch.cuda.Event | None] = [None] * self.SLOTS

    def empty(self, slot: int) -> Callable[[str, tuple[int, ...]], Tensor]:
        event, self.events[slot] = self.events[slot], None
        if event is not None:
            event.synchronize()
        buffers = self.buffers[slot]

        def empty(name: str, shape: tuple[int, ...]) -> Tensor:
            buffer = buffers.get(name)
            if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
                rows = max(self.rows, shape[0])
                pin = self.device.type == "cuda"
                buffer = buffers[name] = torch.empty((rows, *shape[1:]), dtype=torch.uint8, pin_memory=pin)
            return buffer[: shape[0]]

        return empty

    def to_device(self, slot: int, images: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # Without events to wait on (other accelerators), a copy must finish before its slot is reused.
        cuda = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=cuda)
        masks = masks.to(self.device, non_blocking=cuda) if masks is not None else None
        if cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self.events[slot] = event
        return images, masks


class BatchLoader:
    """Batches of one split, normalised (and optionally augmented) on ``device``."""

    def __init__(
        self,
        split: Split,
        info: DatasetInfo,
        device: torch.device,
        *,
        batch_size: int,
        augmentation: str = "none",
        expose_groups: bool = True,
        data_on_device: str = "auto",
        num_workers: int = 2,
        batch_transforms: Sequence[Callable[[Tensor, torch.Generator], Tensor]] = (),
    ) -> None:
        self.split = split
        self.batch_transforms = tuple(batch_transforms)
        self.device = device
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.expose_groups = expose_groups
        # A split that is cheap to read (an HDF5 cache) may ask for fewer workers than the default.
        preferred = getattr(split, "preferred_workers", None)
        self.num_workers = num_workers if preferred is None else min(num_workers, preferred)
        self.crop_padding = info.crop_padding
        self.resident = fits_on_device(split, device, data_on_device)
        channels = info.input_shape[0]
        self.mean = torch.tensor(info.mean, device=device, dtype=torch.float32).view(1, channels, 1, 1)
        self.std = torch.tensor(info.std, device=device, dtype=torch.float32).view(1, channels, 1, 1)
        self.labels = split.labels.to(device)
        self.groups = split.groups.to(device) if split.groups is not None else None
        self.bias = split.bias.to(device) if split.bias is not None else None
        self.bboxes = split.bboxes.to(device) if split.bboxes is not None else None
        if isinstance(split, ArraySplit):  # off the device, batches are gathered into pinned buffers (_Staging)
            source_device = device if self.resident else torch.device("cpu")
            self.images = split.images.to(source_device)
            self.masks = split.masks.to(source_device) if split.masks is not None else None

    def __len__(self) -> int:
        return len(self.split)

    def num_batches(
        self, num_samples: int | None = None, drop_singleton: bool = False, drop_last: bool = False, processes: int = 1
    ) -> int:
        """Batches in an epoch; ``drop_last`` drops any incomplete final batch, ``drop_singleton`` one
        that would leave a process under two samples (one sample in a single process)."""
        n = len(self.split) if num_samples is None else num_samples
        full, rest = divmod(n, self.batch_size)
        if drop_last and full:
            return full
        return full + (1 if rest and not (drop_singleton and rest < 2 * processes) else 0)

    def sequential(self) -> Tensor:
        return torch.arange(len(self.split))

    def batches(
        self,
        order: Tensor,
        *,
        start: int = 0,
        generator: torch.Generator | None = None,
        drop_singleton: bool = False,
        drop_last: bool = False,
        world: World | None = None,
    ) -> Iterator[Batch]:
        """Yield batches of ``order`` (indices into the split), skipping the first ``start`` batches.

        ``generator`` drives augmentation; without it no augmentation is applied (evaluation).
        A final batch of one sample is dropped when ``drop_singleton`` (BatchNorm cannot train on it),
        any incomplete final batch when ``drop_last`` (unless it is the only one). With ``world``
        (several processes), ``batch_size`` is the global batch and each yields its share of it.
        """
        raw = self.raw_batches(order, start=start, drop_singleton=drop_singleton, drop_last=drop_last, world=world)
        for index, images, masks in raw:
            yield self._finish(index, images, masks, generator)

    def raw_batches(
        self,
        order: Tensor,
        *,
        start: int = 0,
        drop_singleton: bool = False,
        drop_last: bool = False,
        world: World | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """``(index, images, masks)`` of each batch of :meth:`batches`, uint8 on the device, before
        normalisation. The tensors may be reused buffers: use each batch before asking for the next."""
        order = order.cpu()
        processes = world.size if world is not None else 1
        total = self.num_batches(len(order), drop_singleton, drop_last, processes)
        chunks = [order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, total)]
        if world is not None and world.distributed:
            chunks = [shard(chunk, world) for chunk in chunks]
        if isinstance(self.split, ArraySplit) and self.resident and self.device.type != "cpu":
            for chunk in chunks:  # on the device already: index there
                index = chunk.to(self.device, non_blocking=True)
                yield index, self.images[index], self.masks[index] if self.masks is not None else None
        elif (reader := self._gather if isinstance(self.split, ArraySplit) else batch_reader(self.split)) is not None:
            yield from self._read_batches(chunks, reader)
        else:
            yield from self._stream_batches(chunks)

    def _gather(self, index: Tensor, empty: Callable[[str, tuple[int, ...]], Tensor]) -> tuple[Tensor, Tensor | None]:
        """An in-memory batch, gathered into ``empty``'s buffers (the ``read_batch`` of an ArraySplit)."""
        images = take_rows(self.images, index, empty("images", (len(index), *self.images.shape[1:])))
        if self.masks is None:
            return images, None
        return images, take_rows(self.masks, index, empty("masks", (len(index), *self.masks.shape[1:])))

    def _read_batches(
        self, chunks: list[Tensor], reader: BatchReader
    ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Whole batches from ``reader``, the next one read in a thread while this one is used."""
        if not chunks:
            return
        staging = _Staging(self.batch_size, self.device)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robust-read")

        def read(b: int) -> tuple[Tensor, Tensor | None]:
            return reader(chunks[b], staging.empty(b % staging.SLOTS))

        try:
            pending = pool.submit(read, 0)
            for b, chunk in enumerate(chunks):
                images, masks = pending.result()
                if b + 1 < len(chunks):
                    pending = pool.submit(read, b + 1)
                yield chunk.to(self.device, non_blocking=True), *staging.to_device(b % staging.SLOTS, images, masks)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stream_batches(self, chunks: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        if not chunks:
            return
        loader = DataLoader(
            _StreamItems(self.split),  # type: ignore[arg-type]
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=_collate,
            persistent_workers=False,
        )
        for indices, images, masks in loader:
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True) if masks is not None else None
            yield indices.to(self.device), images, masks

    def _finish(self, index: Tensor, images: Tensor, masks: Tensor | None, generator) -> Batch:
        x = images.float().div_(255.0)
        mask = masks.float().div_(255.0) if masks is not None else None
        bbox = self.bboxes[index] if self.bboxes is not None else None
        if generator is not None and self.augmentation != "none":
            x, mask, bbox = augment(self.augmentation, x, mask, bbox, generator, pad=self.crop_padding)
        if generator is not None:  # training batches only
            for transform in self.batch_transforms:
                x = transform(x, generator)
        x = x.sub_(self.mean).div_(self.std)  # in place: no extra full-batch float tensors
        return Batch(
            x=x,
            y=self.labels[index],
            index=index,
            group=self.groups[index] if self.groups is not None and self.expose_groups else None,
            bias=self.bias[index] if self.bias is not None and self.expose_groups else None,
            mask=mask,
            bbox=bbox,
        )
