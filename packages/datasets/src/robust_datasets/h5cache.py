"""Decode once, then read uint8 arrays: any dataset as one HDF5 file.

Decoding JPEGs with PIL costs milliseconds per image, every epoch; reading a pre-resized uint8
array from an uncompressed HDF5 chunk costs microseconds. ``robust data cache NAME`` decodes
every split of a dataset once (threads: PIL releases the GIL while decoding and resizing) and
writes ``DATA_ROOT/.cache/<name>-<fingerprint>.h5``; factories wrapped in :func:`cached_dataset`
read that file instead of the image folder from then on.

Layout (:data:`FORMAT_VERSION` 1)::

    /                 attrs: format_version, fingerprint, dataset, options (JSON),
                             info (JSON of DatasetInfo), splits, aux (JSON lists, in order)
    /splits/<split>/  images (N, C, H, W) uint8, contiguous (with lzf: one image per chunk)
                      labels (N,) int64; groups, bias (N,) int64, masks (N, 1, H, W) uint8,
                      bboxes (N, 4) int64 where the split has them
    /aux/<split>/     the same, for non-evaluated splits (``DatasetBundle.aux``)

The fingerprint hashes the dataset name, ``version`` (bump it when the factory's output changes)
and every config option except those that only say how to hold the data (:data:`NOT_DATA`:
``in_memory``, ``memory_limit_gb``). ``root`` counts (resolved to an absolute path): another copy
of the files may be another version of them. Changing an option therefore never reads a stale
file. Files are written atomically, so an interrupted ``robust data cache`` leaves none.

Reading: a split that fits (``in_memory`` ``auto`` under ``memory_limit_gb``, or ``yes``) is read
with one bulk slice into an :class:`~robust.data.ArraySplit`; a larger one becomes an
:class:`H5Split` that opens the file lazily in each process (never through a handle inherited
across a DataLoader fork, which corrupts reads: pytorch/pytorch#11929). An uncompressed array is
stored contiguously, so an H5Split maps it into memory (``numpy.memmap``) and gathers a whole batch
with one ``numpy.take`` (:meth:`H5Split.read_batch`, which the loader calls): no HDF5 call and no
Python per image. Files written by earlier versions (one image per chunk) and lzf files are read
chunk by chunk into the batch instead; both give the same bytes.

Wrapping a factory (the real one stays a plain function, reachable as ``load.build``)::

    def build(config: WaterbirdsConfig, data_root: Path) -> DatasetBundle:
        ...  # reads the image folder

    load = cached_dataset("waterbirds")(build)           # what plugin.py registers

or ``@cached_dataset("waterbirds", version=2)`` on the factory. Use the registered name. Then
``robust data cache waterbirds`` writes the file, ``robust run ... --dataset waterbirds`` reads it,
and ``robust data verify waterbirds`` still checks the image files (it calls ``load.build``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor

from robust.api import (
    ArraySplit,
    DataError,
    DatasetBundle,
    DatasetInfo,
    Split,
    StreamSplit,
    atomic_write,
    expand_user,
    take_rows,
)
from robust_datasets.imagefiles import mask_bbox

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the file layout changes
CACHE_DIR = ".cache"  # under the data root (robust_datasets.commands keeps the same name)
NOT_DATA = frozenset({"in_memory", "memory_limit_gb"})  # options that do not change the data
DEFAULT_MEMORY_LIMIT_GB = 4.0  # for configs without memory_limit_gb (as ImageDatasetConfig's default)
WRITE_CHUNK = 256  # images decoded and written at a time: bounds memory while caching
RDCC_NBYTES = 64 * 2**20  # HDF5 chunk cache per open file (the default is 1 MiB)
RDCC_NSLOTS = 100_003  # a prime, as HDF5 recommends, well above the chunks that fit in the cache
FIELDS = ("labels", "groups", "bias", "bboxes")

Factory = Callable[[Any, Path], DatasetBundle]


# -- naming -----------------------------------------------------------------------------------


def data_options(config: Any) -> dict[str, Any]:
    """The options of ``config`` (pydantic model, mapping or None) that change the data, JSON-ready."""
    if config is None:
        options: dict[str, Any] = {}
    elif isinstance(config, BaseModel):
        options = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        options = json.loads(json.dumps(dict(config), default=str))
    else:
        raise TypeError(f"a dataset config must be a pydantic model, a mapping or None, not {type(config).__name__}")
    options = {k: v for k, v in options.items() if k not in NOT_DATA}
    if options.get("root"):
        options["root"] = str(expand_user(options["root"]).resolve())
    return options


def fingerprint(name: str, config: Any, version: int = 1) -> str:
    """16 hex digits naming dataset ``name`` built with ``config`` by factory ``version``."""
    record = {"dataset": name, "version": version, "format": FORMAT_VERSION, "options": data_options(config)}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cache_dir(data_root: str | os.PathLike[str]) -> Path:
    return Path(data_root) / CACHE_DIR


def cache_path(data_root: str | os.PathLike[str], name: str, config: Any, version: int = 1) -> Path:
    """``DATA_ROOT/.cache/<name>-<fingerprint>.h5``."""
    return cache_dir(data_root) / f"{name}-{fingerprint(name, config, version)}.h5"


def cache_files(data_root: str | os.PathLike[str], name: str) -> list[Path]:
    """Every cache file of dataset ``name`` (any options), newest first."""
    directory = cache_dir(data_root)
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.h5")
    found = [p for p in directory.iterdir() if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


# -- writing ----------------------------------------------------------------------------------


def write_cache(
    bundle: DatasetBundle,
    path: str | os.PathLike[str],
    *,
    fingerprint: str = "",
    options: Mapping[str, Any] | None = None,
    compression: str | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write every split of ``bundle`` to ``path`` atomically; return ``path``.

    Stream splits are decoded with ``threads`` threads (default: 2 per core, at most 8),
    :data:`WRITE_CHUNK` images at a time, so memory stays bounded whatever the dataset's size.
    ``compression`` is None (fastest reads) or ``"lzf"`` (smaller files, cheap to decompress).
    ``progress(n)`` is called after each ``n`` images written.
    """
    if compression not in (None, "lzf"):
        raise ValueError(f"compression must be None or 'lzf', not {compression!r}")
    path = Path(path)
    threads = threads or max(1, min(8, 2 * (os.cpu_count() or 1)))
    info_json = _info_to_json(bundle.info)
    for name in [*bundle.splits, *bundle.aux]:
        if "/" in name or not name:
            raise DataError(f"Dataset {bundle.info.name!r}: split name {name!r} cannot be stored (empty or has '/').")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["fingerprint"] = fingerprint
            handle.attrs["dataset"] = bundle.info.name
            handle.attrs["options"] = json.dumps(dict(options or {}), sort_keys=True, default=str)
            handle.attrs["info"] = info_json
            handle.attrs["splits"] = json.dumps(list(bundle.splits))
            handle.attrs["aux"] = json.dumps(list(bundle.aux))
            for section, splits in (("splits", bundle.splits), ("aux", bundle.aux)):
                parent = handle.create_group(section)
                for name, split in splits.items():
                    _write_split(parent.create_group(name), name, split, bundle.info, compression, threads, progress)

    atomic_write(path, write)
    return path


def _write_split(
    group: h5py.Group,
    name: str,
    split: Split,
    info: DatasetInfo,
    compression: str | None,
    threads: int,
    progress: Callable[[int], None] | None,
) -> None:
    group.attrs["kind"] = type(split).__name__
    for field in FIELDS:
        value = getattr(split, field)
        if value is not None:
            group.create_dataset(field, data=value.cpu().numpy())
    if isinstance(split, ArraySplit):
        _write_arrays(group, split, compression, progress)
    elif isinstance(split, StreamSplit):
        _write_stream(group, name, split, info, compression, threads, progress)
    else:
        raise DataError(f"Split {name!r} is a {type(split).__name__}, neither an ArraySplit nor a StreamSplit.")


def _image_dataset(
    group: h5py.Group, key: str, n: int, shape: tuple[int, ...], compression: str | None
) -> h5py.Dataset:
    """An uint8 (n, *shape) dataset: contiguous when uncompressed (readers map it and gather whole
    batches), else one image per chunk (HDF5 compresses chunks only, and needs n > 0 to chunk)."""
    if n == 0 or compression is None:
        return group.create_dataset(key, shape=(n, *shape), dtype=np.uint8)
    return group.create_dataset(key, shape=(n, *shape), dtype=np.uint8, chunks=(1, *shape), compression=compression)


def _write_arrays(group: h5py.Group, split: ArraySplit, compression: str | None, progress) -> None:
    n = len(split)
    sources = {"images": split.images, "masks": split.masks}
    targets = {
        key: _image_dataset(group, key, n, tuple(value.shape[1:]), compression)
        for key, value in sources.items()
        if value is not None
    }
    for start in range(0, n, WRITE_CHUNK):
        stop = min(n, start + WRITE_CHUNK)
        for key, target in targets.items():
            target[start:stop] = np.ascontiguousarray(sources[key][start:stop].cpu().numpy())
        if progress is not None:
            progress(stop - start)


def _write_stream(
    group: h5py.Group,
    name: str,
    split: StreamSplit,
    info: DatasetInfo,
    compression: str | None,
    threads: int,
    progress: Callable[[int], None] | None,
) -> None:
    n = len(split)
    if n == 0:
        _image_dataset(group, "images", 0, tuple(info.input_shape), compression)
        return
    images_ds = masks_ds = None
    image_buf = mask_buf = None
    shape = mask_shape = None
    boxes = np.zeros((n, 4), dtype=np.int64) if split.bboxes is None else None
    start = 0
    for index, image, mask in _decode(split, threads):
        if images_ds is None:  # the first image fixes the split's shape
            shape = tuple(image.shape)
            images_ds = _image_dataset(group, "images", n, shape, compression)
            image_buf = np.empty((WRITE_CHUNK, *shape), dtype=np.uint8)
            if mask is not None:
                mask_shape = tuple(mask.shape)
                masks_ds = _image_dataset(group, "masks", n, mask_shape, compression)
                mask_buf = np.empty((WRITE_CHUNK, *mask_shape), dtype=np.uint8)
        if tuple(image.shape) != shape or (mask is None) != (masks_ds is None):
            raise DataError(
                f"Split {name!r}: {_item_name(split, index)} decodes to shape {tuple(image.shape)} "
                f"(mask {'none' if mask is None else tuple(mask.shape)}), but the split's first image is {shape} "
                f"(mask {'none' if mask_shape is None else mask_shape}); every image of a split must share one size."
            )
        image_buf[index - start] = image.numpy()
        if mask is not None:
            if tuple(mask.shape) != mask_shape:
                raise DataError(
                    f"Split {name!r}: the mask of {_item_name(split, index)} has shape {tuple(mask.shape)}, not {mask_shape}."
                )
            mask_buf[index - start] = mask.numpy()
            if boxes is not None:  # as ImageFileSplit.load: tight boxes of the decoded masks
                boxes[index] = mask_bbox(mask.numpy()[0])
        if index - start + 1 == WRITE_CHUNK or index == n - 1:
            stop = index + 1
            images_ds[start:stop] = image_buf[: stop - start]
            if masks_ds is not None:
                masks_ds[start:stop] = mask_buf[: stop - start]
            if progress is not None:
                progress(stop - start)
            start = stop
    if boxes is not None and masks_ds is not None:
        group.create_dataset("bboxes", data=boxes)


def _decode(split: StreamSplit, threads: int) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """``(index, image, mask)`` for every item in order, ``threads`` at a time, a bounded window ahead."""
    n = len(split)
    if threads <= 1:
        for index in range(n):
            yield index, *split.read(index)
        return
    window = 4 * threads
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        pending: deque[Future] = deque(pool.submit(split.read, i) for i in range(min(n, window)))
        submitted = len(pending)
        for index in range(n):
            image, mask = pending.popleft().result()
            if submitted < n:
                pending.append(pool.submit(split.read, submitted))
                submitted += 1
            yield index, image, mask
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _item_name(split: Split, index: int) -> str:
    paths = getattr(split, "paths", None)
    return f"image {index} ({str(paths[index])!r})" if paths is not None else f"image {index}"


def _info_to_json(info: DatasetInfo) -> str:
    try:
        return json.dumps(dataclasses.asdict(info))
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"Dataset {info.name!r} cannot be cached: its DatasetInfo does not convert to JSON ({exc}). "
            "Keep info.extra to plain numbers, strings, lists and dicts."
        ) from None


def _info_from_json(text: str) -> DatasetInfo:
    record = json.loads(text)
    known = {f.name for f in dataclasses.fields(DatasetInfo)}
    record = {k: v for k, v in record.items() if k in known}
    for key in ("input_shape", "mean", "std"):
        if key in record:
            record[key] = tuple(record[key])
    return DatasetInfo(**record)


# -- reading ----------------------------------------------------------------------------------


def _open(path: str | os.PathLike[str], *, chunk_cache: bool = True) -> h5py.File:
    """Read-only; with a generous chunk cache for item reads, none for bulk reads (it would add a copy)."""
    if not chunk_cache:
        return h5py.File(path, "r", rdcc_nbytes=0)
    return h5py.File(path, "r", rdcc_nbytes=RDCC_NBYTES, rdcc_nslots=RDCC_NSLOTS, rdcc_w0=1.0)


#: ``empty(name, shape)``: an uint8 tensor of ``shape`` to fill with the batch's ``name`` (images, masks).
Empty = Callable[[str, tuple[int, ...]], Tensor]


def _new(name: str, shape: tuple[int, ...]) -> Tensor:
    return torch.empty(shape, dtype=torch.uint8)


class H5Split(StreamSplit):
    """A split read from a cache file, a batch or an image at a time; labels, groups, bias, boxes stay in memory.

    The file is opened on the first read in each process (checked by pid), so a DataLoader
    worker never reads through a handle it inherited from its parent. Pickling drops the handle
    and the mapping (spawned workers open their own). The loader calls :meth:`read_batch` from a
    thread of the main process: gathering a batch from the mapped file is far cheaper than handing
    it between processes (benchmarks/data_cache.py).
    """

    preferred_workers = 0

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: str,
        labels: Tensor,
        *,
        groups: Tensor | None = None,
        bias: Tensor | None = None,
        bboxes: Tensor | None = None,
        has_masks: bool = False,
        image_shape: tuple[int, ...] = (),
    ) -> None:
        super().__init__(labels=labels, groups=groups, bias=bias, bboxes=bboxes)
        self.path = str(path)
        self.key = key
        self.has_masks = has_masks
        self.image_shape = tuple(image_shape)
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._images: _ImageReader | None = None
        self._masks: _ImageReader | None = None

    _opening = threading.Lock()  # threads of one process share one handle

    def _datasets(self) -> tuple[_ImageReader, _ImageReader | None]:
        if self._pid != os.getpid():
            with self._opening:
                if self._pid != os.getpid():
                    self._reopen()
        return self._images, self._masks  # type: ignore[return-value]

    def _reopen(self) -> None:
        self.close()  # a handle inherited through fork is closed, never read from
        try:
            handle = _open(self.path)
        except OSError as exc:
            raise DataError(
                f"Cannot read the dataset cache {self.path!r} ({exc}). Rebuild it with `robust data cache`, "
                "or delete it to read the original files."
            ) from None
        group = handle[self.key]
        self._handle = handle
        self._images = _ImageReader(group["images"], self.path)
        self._masks = _ImageReader(group["masks"], self.path) if self.has_masks else None
        self._pid = os.getpid()  # last: other threads read the handle once they see it

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        images, masks = self._datasets()
        return images.item(index), (masks.item(index) if masks is not None else None)

    def read_batch(self, indices: Tensor, empty: Empty | None = None) -> tuple[Tensor, Tensor | None]:
        """Images (and masks) ``indices`` as uint8 ``(B, C, H, W)``, in that order: ``read`` of each, stacked.

        ``empty(name, shape)`` gives the tensors to fill (``"images"``, ``"masks"``): the loader's
        reused, pinned buffers; by default new ones.
        """
        empty = empty or _new
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        images, masks = self._datasets()
        out = images.gather(indices, empty("images", (len(indices), *images.shape)))
        if masks is None:
            return out, None
        return out, masks.gather(indices, empty("masks", (len(indices), *masks.shape)))

    def load(self) -> ArraySplit:
        """The whole split in memory, with one bulk read per array."""
        with _open(self.path, chunk_cache=False) as handle:
            group = handle[self.key]
            images = _bulk(group["images"])
            masks = _bulk(group["masks"]) if self.has_masks else None
        return ArraySplit(
            labels=self.labels, groups=self.groups, bias=self.bias, bboxes=self.bboxes, images=images, masks=masks
        )

    @property
    def decoded_nbytes(self) -> int:
        per_image = int(np.prod(self.image_shape)) if self.image_shape else 0
        if self.has_masks and self.image_shape:
            per_image += int(np.prod(self.image_shape[1:]))
        return per_image * len(self)

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(Exception):
                self._handle.close()
        self._handle = self._images = self._masks = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handle=None, _images=None, _masks=None, _pid=None)
        return state


class _ImageReader:
    """Reads images of one uint8 ``(N, ...)`` dataset, one or a batch at a time.

    Contiguous (what :func:`write_cache` writes uncompressed): the file's bytes are the array, so it
    is mapped (``numpy.memmap``, read-only) and a batch is one gather into the output (numpy's take,
    without the GIL), with no HDF5 call. Chunked one image per chunk and uncompressed
    (files of earlier versions): each chunk is read directly into its row of the output, skipping
    HDF5's selection machinery (about 1.5x faster than ``dataset[index]``). Otherwise (lzf): HDF5
    reads, one per run of consecutive indices. The dataset's properties are looked up once here:
    each lookup is an HDF5 call.
    """

    def __init__(self, dataset: h5py.Dataset, path: str) -> None:
        self.dataset = dataset
        self.shape = tuple(dataset.shape[1:])
        self.offset_tail = (0,) * len(self.shape)
        self.raw = dataset.compression is None and dataset.chunks == (1, *self.shape)
        self.mapped = _mapped(dataset, path)

    def item(self, index: int) -> Tensor:
        if self.mapped is not None:  # numpy's copy: one thread, no intra-op pool to wake for 150 KiB
            return torch.from_numpy(self.mapped.numpy()[index].copy())
        return self.gather(torch.tensor([index]), torch.empty((1, *self.shape), dtype=torch.uint8))[0]

    def gather(self, indices: Tensor, out: Tensor) -> Tensor:
        """Rows ``indices`` into ``out`` (contiguous, on the CPU); returns ``out``."""
        if self.mapped is not None:
            return take_rows(self.mapped, indices, out)
        target = out.numpy()
        if self.raw:
            for row, index in enumerate(indices.tolist()):
                self.dataset.id.read_direct_chunk((index, *self.offset_tail), out=target[row].reshape(-1))
            return out
        for row, index, count in _runs(indices.tolist()):
            self.dataset.read_direct(target, np.s_[index : index + count], np.s_[row : row + count])
        return out


def _mapped(dataset: h5py.Dataset, path: str) -> Tensor | None:
    """A contiguous, uncompressed dataset as a read-only mapped tensor (None for any other layout).

    The first and last images are checked against HDF5's own read, so a layout the offset does not
    describe (a user block, external storage) falls back to reading through HDF5.
    """
    if dataset.chunks is not None or dataset.compression is not None or dataset.dtype != np.uint8:
        return None
    offset = dataset.id.get_offset() if dataset.shape[0] else None
    if offset is None:  # empty, or never written
        return None
    try:
        array = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=dataset.shape)
    except (OSError, ValueError):
        return None
    for index in (0, dataset.shape[0] - 1):
        if not np.array_equal(array[index], dataset[index]):
            return None
    with warnings.catch_warnings():  # read-only: torch warns that writing would be undefined; nothing writes
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _runs(indices: list[int]) -> Iterator[tuple[int, int, int]]:
    """``(row, index, count)``: runs of consecutive indices at consecutive rows (a sequential order is one run)."""
    row = 0
    while row < len(indices):
        count = 1
        while row + count < len(indices) and indices[row + count] == indices[row] + count:
            count += 1
        yield row, indices[row], count
        row += count


def _bulk(dataset: h5py.Dataset) -> Tensor:
    array = np.empty(dataset.shape, dtype=dataset.dtype)
    if array.size:
        dataset.read_direct(array)
    return torch.from_numpy(array)


def read_cache(
    path: str | os.PathLike[str],
    *,
    in_memory: str = "auto",
    memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB,
    expected_fingerprint: str | None = None,
) -> DatasetBundle:
    """The bundle stored at ``path``: splits under ``memory_limit_gb`` (or all with ``in_memory="yes"``)
    as ArraySplits, the rest as :class:`H5Split` (all of them with ``in_memory="no"``)."""
    if in_memory not in ("auto", "yes", "no"):
        raise ValueError(f"in_memory must be auto, yes or no, not {in_memory!r}")
    path = Path(path)
    try:
        with _open(path, chunk_cache=False) as handle:
            version = int(handle.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise DataError(
                    f"Dataset cache {str(path)!r} has format version {version}, this robust-datasets reads "
                    f"{FORMAT_VERSION}. Rebuild it with `robust data cache`."
                )
            stored = str(handle.attrs.get("fingerprint", ""))
            if expected_fingerprint is not None and stored != expected_fingerprint:
                raise DataError(
                    f"Dataset cache {str(path)!r} holds fingerprint {stored!r}, not {expected_fingerprint!r} "
                    "(renamed or copied by hand?). Delete it and rebuild it with `robust data cache`."
                )
            info = _info_from_json(str(handle.attrs["info"]))
            sections: dict[str, dict[str, Split]] = {}
            for section in ("splits", "aux"):
                names = json.loads(str(handle.attrs[section]))
                sections[section] = {
                    name: _read_split(path, handle[section][name], f"{section}/{name}", in_memory, memory_limit_gb)
                    for name in names
                }
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"Dataset cache {str(path)!r} is unreadable or incomplete ({type(exc).__name__}: {exc}). "
            "Delete it and rebuild it with `robust data cache`."
        ) from None
    return DatasetBundle(info=info, splits=sections["splits"], aux=sections["aux"])


def _read_split(path: Path, group: h5py.Group, key: str, policy: str, limit_gb: float) -> Split:
    fields = {field: torch.from_numpy(group[field][()]) if field in group else None for field in FIELDS}
    images = group["images"]
    has_masks = "masks" in group
    nbytes = images.size + (group["masks"].size if has_masks else 0)
    if policy == "yes" or (policy == "auto" and nbytes <= limit_gb * 2**30):
        masks = _bulk(group["masks"]) if has_masks else None
        return ArraySplit(**fields, images=_bulk(images), masks=masks)
    return H5Split(path, key, has_masks=has_masks, image_shape=tuple(images.shape[1:]), **fields)


# -- the decorator ----------------------------------------------------------------------------


def cached_dataset(name: str, *, version: int = 1, config_class: type[BaseModel] | None = None):
    """Wrap factory ``build(config, data_root)``: read ``DATA_ROOT/.cache/<name>-<fingerprint>.h5``
    when it exists, else call ``build``.

    ``name`` is the registered dataset name; bump ``version`` when ``build``'s output changes so
    that old files are ignored. The cached splits honour ``config.in_memory`` and
    ``config.memory_limit_gb`` when the config has them (else ``auto`` under
    :data:`DEFAULT_MEMORY_LIMIT_GB`). A cache file that cannot be read is logged and ignored.
    The result keeps ``build`` as ``.build`` (``robust data verify`` calls it to check the files).
    """

    def wrap(build: Factory) -> Factory:
        @functools.wraps(build)
        def load(config: Any, data_root: Path) -> DatasetBundle:
            config = _as_config(name, config, config_class)
            path = cache_path(data_root, name, config, version)
            if path.is_file():
                try:
                    bundle = read_cache(
                        path,
                        in_memory=_option(config, "in_memory", "auto"),
                        memory_limit_gb=float(_option(config, "memory_limit_gb", DEFAULT_MEMORY_LIMIT_GB)),
                        expected_fingerprint=fingerprint(name, config, version),
                    )
                except DataError as exc:
                    logger.warning("%s Reading the original files instead.", exc)
                else:
                    logger.info("Dataset %s read from its cache %s", name, path)
                    return bundle
            return build(config, data_root)

        load.build = build  # type: ignore[attr-defined]
        load.dataset_name = name  # type: ignore[attr-defined]
        load.cache_version = version  # type: ignore[attr-defined]
        return load

    return wrap


def _as_config(name: str, config: Any, config_class: type[BaseModel] | None) -> Any:
    """A mapping (or None) validated into the dataset's config model, so defaults count in the fingerprint."""
    if isinstance(config, BaseModel) or not (config is None or isinstance(config, Mapping)):
        return config
    if config_class is None:
        from robust.api import get_registry

        entry = get_registry().find("dataset", name)
        config_class = entry.load_config() if entry is not None else None
    if config_class is None:
        return config
    return config_class.model_validate(dict(config or {}))


def _option(config: Any, key: str, default: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def underlying_factory(factory: Factory) -> Factory:
    """The factory a :func:`cached_dataset` wrapper calls (``factory`` itself when not wrapped)."""
    return getattr(factory, "build", factory)


def build_cache(
    name: str,
    factory: Factory,
    config: Any,
    data_root: str | os.PathLike[str],
    *,
    compression: str | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> Path:
    """Build dataset ``name`` with the undecorated ``factory`` and write its cache; return the path.

    ``total(n)`` is called once with the number of images (and masks) to write, before writing.
    """
    version = getattr(factory, "cache_version", 1)
    path = cache_path(data_root, name, config, version)
    bundle = underlying_factory(factory)(config, Path(data_root))
    if total is not None:
        total(sum(len(s) for s in [*bundle.splits.values(), *bundle.aux.values()]))
    return write_cache(
        bundle,
        path,
        fingerprint=fingerprint(name, config, version),
        options=data_options(config),
        compression=compression,
        threads=threads,
        progress=progress,
    )
