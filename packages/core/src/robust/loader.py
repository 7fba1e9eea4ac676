"""Turning a split into device batches.

In-memory splits that fit are moved to the device once and batched by indexing (no worker
processes, no per-item Python: the airbench pattern). Splits that stream from disk go through a
DataLoader with worker processes and pinned memory. Either way, the engine chooses the sample
order (a tensor of indices), so that samplers, resampling and mid-epoch resume are one thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robust.augment import augment
from robust.data import ArraySplit, Batch, DatasetInfo, Split, StreamSplit
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
        if isinstance(split, ArraySplit):
            source_device = device if self.resident else torch.device("cpu")
            self.images = split.images.to(source_device)
            self.masks = split.masks.to(source_device) if split.masks is not None else None
            if not self.resident and device.type == "cuda":
                self.images = self.images.pin_memory()
                self.masks = self.masks.pin_memory() if self.masks is not None else None

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
        order = order.cpu()
        processes = world.size if world is not None else 1
        total = self.num_batches(len(order), drop_singleton, drop_last, processes)
        chunks = [order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, total)]
        if world is not None and world.distributed:
            chunks = [shard(chunk, world) for chunk in chunks]
        if isinstance(self.split, ArraySplit):
            for chunk in chunks:
                yield self._array_batch(chunk, generator)
        else:
            yield from self._stream_batches(chunks, generator)

    def _array_batch(self, chunk: Tensor, generator: torch.Generator | None) -> Batch:
        index = chunk.to(self.device, non_blocking=True)
        idx = index if self.resident else chunk
        images = self.images[idx].to(self.device, non_blocking=True)
        masks = self.masks[idx].to(self.device, non_blocking=True) if self.masks is not None else None
        return self._finish(index, images, masks, generator)

    def _stream_batches(self, chunks: list[Tensor], generator: torch.Generator | None) -> Iterator[Batch]:
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
            yield self._finish(indices.to(self.device), images, masks, generator)

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
