"""The HDF5 dataset cache against decoding an image folder, and memory while streaming a large cache.

Throughput. ``--images`` JPEG (or ``--format png``) files of ``--size`` pixels (or ``--source-size``,
then resized to ``--size`` when decoded, as real datasets are) are generated in a real image-folder
layout (``train/<class>/<index>.jpg``, smooth random pictures, so the files have realistic sizes),
built into a dataset by a small folder factory (``ImageFileSplit``: PIL decode and resize per item),
and cached with :func:`robust_datasets.h5cache.build_cache`. One pass over the training split, in a
seeded random order, is then timed for each way of reading it, all through robust's
:class:`~robust.loader.BatchLoader` unless said otherwise:

* ``folder``: the ImageFileSplit: a DataLoader over its items (``--workers`` worker processes, PIL
  per item) and a collate;
* ``h5 stream, per item``: the cache as an :class:`~robust_datasets.h5cache.H5Split` read item by
  item, through the same DataLoader path in the main process (the loader's path for the cache before
  issue 21; for uint8 batches, a plain DataLoader with the loader's item dataset and collate);
* ``h5 stream, batch reads``: the same H5Split as the loader reads it now: a whole batch per
  ``read_batch`` (one gather from the mapped file), one batch ahead in a thread, into reused buffers;
* ``h5 in memory``: the cache read with one bulk slice into an ArraySplit (what a split under
  ``memory_limit_gb`` becomes), then gathered a batch at a time the same way; the bulk read is timed
  apart, and a first epoch's rate including it is printed.

Two figures each: uint8 batches on ``--device`` (``BatchLoader.raw_batches``: the data path; on a
GPU the normalisation runs on the device) and normalised float batches (``BatchLoader.batches``;
on a CPU device the normalisation, not the reading, bounds that figure). Every way is timed once per
repeat, in turn, so that a shared machine's other jobs weigh on all alike; the best and the median
of ``--repeats`` are printed with their ratios to the folder's, and the load average beside them.
Files are read warm from the page cache both ways (they were just written): this measures
decoding, not the disk.

Memory. A ``--stream-images`` x ``--stream-size``\u00b2 dataset is written to an HDF5 cache by a
generated StreamSplit (bounded writer: chunks of 256 images) and streamed once through an H5Split
and a BatchLoader, each in a fresh child process that reports its peak RSS (``VmHWM``) and its
anonymous and file-backed RSS sampled after every batch. Anonymous memory should stay flat: far below
the decoded dataset's size (the mapped file's pages are the page cache's, counted in RSS as file pages).

    python benchmarks/data_cache.py                          # ~2 minutes on 2 cores
    python benchmarks/data_cache.py --images 2000 --repeats 5 --skip-memory
    python benchmarks/data_cache.py --images 20000 --workers 8 --stream-images 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "bird", "fish")


# -- the image folder --------------------------------------------------------------------------------


def write_folder(root: Path, n: int, size: int, fmt: str, threads: int) -> int:
    """``n`` smooth random pictures as ``root/train/<class>/<i>.<fmt>``; returns the bytes written."""
    from PIL import Image

    for name in CLASSES:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)

    def one(i: int) -> int:
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.int16)
        texture = rng.integers(-12, 13, smooth.shape, dtype=np.int16)  # JPEGs the size of photos'
        image = Image.fromarray(np.clip(smooth + texture, 0, 255).astype(np.uint8))
        path = root / "train" / CLASSES[i % len(CLASSES)] / f"{i:06d}.{fmt}"
        image.save(path, **({"quality": 90} if fmt == "jpg" else {}))
        return path.stat().st_size

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, range(n)))


def folder_factory(size: int):
    """A dataset factory for the folder layout: train is every image, val/test a few of them."""
    import torch

    from robust.data import DatasetBundle, DatasetInfo
    from robust_datasets.imagefiles import ImageFileSplit, Resize

    def build(config, data_root: Path):
        paths = sorted((Path(data_root) / "train").glob("*/*"))
        labels = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
        resize = Resize(size)
        splits = {"train": ImageFileSplit(paths, labels, resize, groups=labels)}
        for name, part in (("val", slice(0, 64)), ("test", slice(64, 128))):
            splits[name] = ImageFileSplit(paths[part], labels[part], resize, groups=labels[part])
        info = DatasetInfo(
            name="bench-folder",
            num_classes=len(CLASSES),
            input_shape=(3, size, size),
            class_names=list(CLASSES),
            group_names=list(CLASSES),
        )
        return DatasetBundle(info, splits)

    return build


# -- timing ------------------------------------------------------------------------------------------


def item_pass(split, order, batch_size: int, workers: int) -> float:
    """Seconds for one pass of uint8 batches read item by item: a DataLoader over the split's items
    and a collate (the loader's path for image files, and its path for the cache until issue 21)."""
    from torch.utils.data import DataLoader

    from robust.loader import _collate, _StreamItems

    chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    start = time.perf_counter()
    loader = DataLoader(_StreamItems(split), batch_sampler=chunks, num_workers=workers, collate_fn=_collate)
    seen = sum(len(index) for index, _, _ in loader)
    assert seen == len(order)
    return time.perf_counter() - start


def bulk_read(path: Path):
    """(seconds, split): the cache's train split read into memory with one bulk slice."""
    from robust_datasets.h5cache import read_cache

    start = time.perf_counter()
    split = read_cache(path, in_memory="yes").splits["train"]
    return time.perf_counter() - start, split


def raw_pass(split, info, device, order, batch_size: int, workers: int) -> float:
    """Seconds for one pass of uint8 batches on ``device`` through the BatchLoader (its data path
    without the normalisation: on a GPU that runs on the device)."""
    import torch

    from robust.loader import BatchLoader

    start = time.perf_counter()
    loader = BatchLoader(split, info, device, batch_size=batch_size, num_workers=workers, data_on_device="no")
    seen = sum(len(index) for index, _, _ in loader.raw_batches(order))
    assert seen == len(order)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def batchloader_pass(split, info, device, order, batch_size: int, workers: int) -> float:
    """Seconds for one pass of normalised batches on ``device`` through robust's BatchLoader."""
    import torch

    from robust.loader import BatchLoader

    start = time.perf_counter()
    loader = BatchLoader(split, info, device, batch_size=batch_size, num_workers=workers, data_on_device="no")
    for _ in loader.batches(order):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def item_by_item(split):
    """``split`` without ``read_batch``: the BatchLoader reads it through its per-item DataLoader path."""
    from robust.data import StreamSplit

    class Items(StreamSplit):
        def read(self, index: int):
            return split.read(index)

    return Items(labels=split.labels, groups=split.groups, bias=split.bias, bboxes=split.bboxes)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cpus"


def throughput(args: argparse.Namespace, work: Path) -> dict:
    import statistics

    import torch

    from robust.device import resolve_device
    from robust_datasets.h5cache import build_cache, read_cache

    folder = work / "folder"
    t = time.perf_counter()
    source = args.source_size or args.size
    file_bytes = write_folder(folder, args.images, source, args.format, args.threads)
    print(f"wrote {args.images} {args.format} files of {source}x{source} ({file_bytes / 2**20:.0f} MiB) "
          f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
    build = folder_factory(args.size)
    t = time.perf_counter()
    path = build_cache("bench-folder", build, None, folder, threads=args.threads)
    cache_s = time.perf_counter() - t
    print(f"cached into {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {cache_s:.1f} s "
          f"({args.images / cache_s:.0f} images/s with {args.threads} threads)")  # fmt: skip

    n, w, bs = args.images, args.workers, args.batch_size
    device = resolve_device(args.device)
    folder_split = build(None, folder).splits["train"]
    info = read_cache(path, in_memory="no").info
    stream = read_cache(path, in_memory="no").splits["train"]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    folder_name = f"folder, PIL per item, {w} workers"
    # name -> (seconds of one pass of uint8 batches, seconds of one pass of normalised batches)
    ways = {
        folder_name: (
            lambda: raw_pass(folder_split, info, device, order, bs, w),
            lambda: batchloader_pass(folder_split, info, device, order, bs, w),
        ),
        "h5 stream, per item, 0 workers": (
            lambda: item_pass(stream, order, bs, 0),
            lambda: batchloader_pass(item_by_item(stream), info, device, order, bs, 0),
        ),
        "h5 stream, batch reads": (
            lambda: raw_pass(stream, info, device, order, bs, 0),
            lambda: batchloader_pass(stream, info, device, order, bs, 0),
        ),
    }
    memory_name = "h5 in memory, per pass"
    uint8: dict[str, list[float]] = {name: [] for name in [*ways, memory_name]}
    normalised: dict[str, list[float]] = {name: [] for name in [*ways, memory_name]}
    bulk: list[float] = []
    loads = [load_average()]
    print(f"\ntiming {args.repeats} repeats, every way of reading in turn; {loads[0]}")
    for _ in range(args.repeats):  # in turn, so that the machine's other jobs weigh on every way alike
        for name, (raw, full) in ways.items():
            uint8[name].append(n / raw())
            normalised[name].append(n / full())
        seconds, memory_split = bulk_read(path)
        bulk.append(n / seconds)
        uint8[memory_name].append(n / raw_pass(memory_split, info, device, order, bs, 0))
        normalised[memory_name].append(n / batchloader_pass(memory_split, info, device, order, bs, 0))
        del memory_split
        loads.append(load_average())
    print(f"  {loads[-1]}")

    def summary(rates: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        best, median = max(rates[folder_name]), statistics.median(rates[folder_name])
        return {
            name: {
                "best": max(values),
                "median": statistics.median(values),
                "ratio_best": max(values) / best,
                "ratio_median": statistics.median(values) / median,
            }
            for name, values in rates.items()
        }

    raw_figures, full_figures = summary(uint8), summary(normalised)
    bulk_rate = max(bulk)
    per_pass = raw_figures[memory_name]["best"]
    first_epoch = n / (n / bulk_rate + n / per_pass)
    print(f"\none pass over {n} images of {args.size}x{args.size} in random order, batch {bs}; "
          f"best and median of {args.repeats} (ratios: to the folder's best, to its median):")  # fmt: skip
    print(
        f"  {'':32} {'uint8 batches (BatchLoader.raw_batches)':>44}   {'normalised, BatchLoader on ' + device.type:>40}"
    )
    print(f"  {'':32} {'best':>10} {'median':>10} {'ratio':>15}   {'best':>10} {'median':>10} {'ratio':>15}")
    for name in uint8:
        a, b = raw_figures[name], full_figures[name]
        print(f"  {name:32} {a['best']:>10.0f} {a['median']:>10.0f} {a['ratio_best']:>6.1f}x {a['ratio_median']:>6.1f}x"
              f"   {b['best']:>10.0f} {b['median']:>10.0f} {b['ratio_best']:>6.1f}x {b['ratio_median']:>6.1f}x")  # fmt: skip
    folder_best = raw_figures[folder_name]["best"]
    print(f"  (images/s) bulk read of the cache into memory: {bulk_rate:.0f} im/s; first epoch in memory, "
          f"bulk read included: {first_epoch:.0f} im/s ({first_epoch / folder_best:.1f}x)")  # fmt: skip
    print(f"  {', then '.join(loads)}")
    return {
        "images": n,
        "size": args.size,
        "source_size": args.source_size or args.size,
        "format": args.format,
        "workers": w,
        "repeats": args.repeats,
        "load_averages": loads,
        "cache_build_images_per_s": n / cache_s,
        "uint8_images_per_s": raw_figures,
        "bulk_read_images_per_s": bulk_rate,
        "first_epoch_in_memory_images_per_s": first_epoch,
        "batchloader_images_per_s": full_figures,
        "device": str(device),
    }


# -- memory ------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def child_write(path: Path, n: int, size: int) -> dict:
    """Write an n-image cache from a generated StreamSplit; report this process's peak RSS."""
    import torch

    from robust.data import DatasetBundle, DatasetInfo, StreamSplit
    from robust_datasets.h5cache import write_cache

    bank = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 3, size, size), dtype=np.uint8))

    class Generated(StreamSplit):
        def read(self, index: int):
            image = bank[index % 64].clone()
            image[0, 0, :4] = torch.tensor(list(index.to_bytes(4, "little")), dtype=torch.uint8)
            return image, None

    labels = torch.arange(n) % 2
    small = Generated(labels=labels[:256], groups=labels[:256])
    bundle = DatasetBundle(
        DatasetInfo("bench-stream", 2, (3, size, size), ["a", "b"], ["a", "b"]),
        {"train": Generated(labels=labels, groups=labels), "val": small, "test": small},
    )
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    write_cache(bundle, path, threads=2)
    return {
        "seconds": time.perf_counter() - start,
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
    }


def child_stream(path: Path, batch_size: int, mode: str) -> dict:
    """Stream the cache once through an H5Split and a BatchLoader; report this process's RSS.

    ``mode`` ``raw``: uint8 batches (``BatchLoader.raw_batches``: the data path alone);
    ``batchloader``: normalised float batches on the CPU. RSS is split into anonymous memory (what
    the process allocated) and file pages: the mapped cache's pages read so far, which are the page
    cache's (shared, dropped under memory pressure), not the process's.
    """
    import torch

    from robust.loader import BatchLoader
    from robust_datasets.h5cache import H5Split, read_cache

    bundle = read_cache(path, in_memory="no")
    split = bundle.splits["train"]
    assert isinstance(split, H5Split)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    loader = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=batch_size, num_workers=0)
    batches = loader.raw_batches(order) if mode == "raw" else loader.batches(order)
    baseline = _status_kib("VmRSS")
    anon, file, total = [], [], []
    start = time.perf_counter()
    for batch in batches:
        del batch
        anon.append(_status_kib("RssAnon") / 1024)
        file.append(_status_kib("RssFile") / 1024)
        total.append(_status_kib("VmRSS") / 1024)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images_per_s": len(split) / seconds,
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_after_first_batches_mib": total[min(1, len(total) - 1)],
        "rss_last_sampled_mib": total[-1],
        "anon_max_sampled_mib": max(anon),
        "anon_last_sampled_mib": anon[-1],
        "file_max_sampled_mib": max(file),
    }


def run_child(*argv: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--child", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise SystemExit(f"child {argv[0]} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# glibc raises its mmap threshold to the largest block freed (up to 32 MiB), after which the float
# batches the BatchLoader allocates on a CPU device come from the heap and stay in RSS when freed.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def memory(args: argparse.Namespace, work: Path) -> dict:
    path = work / "stream.h5"
    n, size, bs = args.stream_images, args.stream_size, args.batch_size
    decoded_mib = n * 3 * size * size / 2**20
    written = run_child("write", str(path), str(n), str(size))
    print(f"\nmemory: {n} images of {size}x{size} = {decoded_mib:.0f} MiB decoded "
          f"(file {path.stat().st_size / 2**20:.0f} MiB); RSS in MiB")  # fmt: skip
    print(f"  write, from a generated StreamSplit: peak {written['peak_rss_mib']:.0f} "
          f"(after imports {written['baseline_rss_mib']:.0f}), {n / written['seconds']:.0f} images/s")  # fmt: skip
    streams = {}
    for label, mode, env in (
        ("H5Split -> BatchLoader.raw_batches, uint8", "raw", None),
        ("H5Split -> BatchLoader on cpu", "batchloader", None),
        ("H5Split -> BatchLoader on cpu, MALLOC_MMAP_THRESHOLD_=1MiB", "batchloader", FIXED_MMAP_THRESHOLD),
    ):
        r = streams[label] = run_child("stream", str(path), str(bs), mode, env=env)
        print(f"  {label} (batch {bs}): peak {r['peak_rss_mib']:.0f} (before the pass {r['baseline_rss_mib']:.0f}, "
              f"after 2 batches {r['rss_after_first_batches_mib']:.0f}, last {r['rss_last_sampled_mib']:.0f}); "
              f"anonymous: highest sample {r['anon_max_sampled_mib']:.0f}, last {r['anon_last_sampled_mib']:.0f}; "
              f"file pages (the mapped cache): highest {r['file_max_sampled_mib']:.0f}; "
              f"{r['images_per_s']:.0f} images/s")  # fmt: skip
    return {"images": n, "size": size, "decoded_mib": decoded_mib, "write": written, "stream": streams}


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, *rest = sys.argv[2:]
        if kind == "write":
            out = child_write(Path(path), int(rest[0]), int(rest[1]))
        else:
            out = child_stream(Path(path), int(rest[0]), rest[1])
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="Image files to generate and read (default 5000).")
    parser.add_argument("--size", type=int, default=224, help="Side of the images, in pixels (default 224).")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument(
        "--source-size", type=int, help="Side of the files written, resized to --size when read (default: --size)."
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2).")
    parser.add_argument("--threads", type=int, default=4, help="Threads generating and caching the files.")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes per way of reading (best and median).")
    parser.add_argument("--device", default="cpu", help="Device of the BatchLoader figures (default cpu).")
    parser.add_argument("--stream-images", type=int, default=20000, help="Images of the memory test (default 20000).")
    parser.add_argument("--stream-size", type=int, default=128, help="Their side in pixels (default 128).")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    parser.add_argument("--workdir", type=Path, help="Where to write the files (default: a temporary directory).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="robust-bench-", dir=args.workdir))
    started = time.perf_counter()
    try:
        figures = {"cpus": os.cpu_count(), "throughput": throughput(args, work)}
        if not args.skip_memory:
            figures["memory"] = memory(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
