"""The HDF5 dataset cache against decoding an image folder, and memory while streaming a large cache.

Throughput. ``--images`` JPEG (or ``--format png``) files of ``--size`` pixels (or ``--source-size``,
then resized to ``--size`` when decoded, as real datasets are) are generated in a real image-folder layout (``train/<class>/<index>.jpg``, smooth random pictures, so the files have
realistic sizes), built into a dataset by a small folder factory (``ImageFileSplit``: PIL decode and
resize per item), and cached with :func:`robust_datasets.h5cache.build_cache`. One pass over the
training split, in a seeded random order, is then timed for each way of reading it:

* ``folder``: the ImageFileSplit through the engine's DataLoader path (``robust.loader``'s item
  dataset and collate, ``--workers`` worker processes), uint8 batches out;
* ``h5-stream``: the cache read as an :class:`~robust_datasets.h5cache.H5Split` through the same
  DataLoader path (what a split larger than ``memory_limit_gb`` does);
* ``h5-memory``: the cache read with one bulk slice into an ArraySplit (what a split under the
  limit does), then batches gathered by index as the BatchLoader does for in-memory splits;
  the bulk read is included in the time.

The ratio to ``folder`` is the speed-up of the data path itself (target: at least 10x). Then the
same three through the full :class:`robust.loader.BatchLoader` (normalised float batches on
``--device``), for context: on a CPU device the normalisation, not the reading, bounds that figure.
Files are read warm from the page cache both ways (they were just written): this measures
decoding, not the disk.

Memory. A ``--stream-images`` x ``--stream-size``\u00b2 dataset is written to an HDF5 cache by a
generated StreamSplit (bounded writer: chunks of 256 images) and streamed once through an H5Split
and a BatchLoader with 2 workers, each in a fresh child process that reports its peak RSS
(``VmHWM``), that of its DataLoader workers (``getrusage(RUSAGE_CHILDREN)``) and its RSS sampled
along the pass. Peak RSS should stay flat: far below the decoded dataset's size.

    python benchmarks/data_cache.py                          # ~1-2 minutes on 2 cores
    python benchmarks/data_cache.py --images 20000 --workers 8 --stream-images 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def loader_pass(split, order, batch_size: int, workers: int) -> float:
    """Seconds for one pass of uint8 batches through the engine's DataLoader path."""
    from torch.utils.data import DataLoader

    from robust.loader import _collate, _StreamItems

    chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    start = time.perf_counter()
    loader = DataLoader(_StreamItems(split), batch_sampler=chunks, num_workers=workers, collate_fn=_collate)
    seen = sum(len(index) for index, _, _ in loader)
    assert seen == len(order)
    return time.perf_counter() - start


def bulk_read(path: Path):
    """(seconds, images): the cache's train split read into memory with one bulk slice."""
    from robust_datasets.h5cache import read_cache

    start = time.perf_counter()
    images = read_cache(path, in_memory="yes").splits["train"].images
    return time.perf_counter() - start, images


def gather_pass(images, order, batch_size: int) -> float:
    """Seconds to gather every batch of an in-memory split by index (the BatchLoader's CPU path)."""
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        images[order[i : i + batch_size]]
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


def throughput(args: argparse.Namespace, work: Path) -> dict:
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
    folder_split = build(None, folder).splits["train"]
    info = read_cache(path, in_memory="no").info
    stream = read_cache(path, in_memory="no").splits["train"]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    ways = {  # name -> (seconds of one pass of uint8 batches, split for the BatchLoader, its workers)
        f"folder, PIL per item, {w} workers": (lambda: loader_pass(folder_split, order, bs, w), folder_split, w),
        f"h5 stream, {w} workers": (lambda: loader_pass(stream, order, bs, w), stream, w),
        "h5 stream, 0 workers": (lambda: loader_pass(stream, order, bs, 0), stream, 0),
    }
    rates: dict[str, float] = {}
    bulk = float("inf")
    images = None
    for _ in range(args.repeats):  # best of repeats: the machine may be shared
        for name, (timed, _, _) in ways.items():
            rates[name] = max(rates.get(name, 0.0), n / timed())
        seconds, images = bulk_read(path)
        bulk = min(bulk, seconds)
        rates["h5 in memory, per pass"] = max(
            rates.get("h5 in memory, per pass", 0.0), n / gather_pass(images, order, bs)
        )
    first_epoch = n / (bulk + n / rates["h5 in memory, per pass"])
    memory_split = read_cache(path, in_memory="yes").splits["train"]
    ways["h5 in memory, per pass"] = (None, memory_split, 0)
    device = resolve_device(args.device)
    end_to_end = {
        name: n / batchloader_pass(split, info, device, order, bs, workers)
        for name, (_, split, workers) in ways.items()
    }
    folder_rate, folder_e2e = rates[next(iter(ways))], end_to_end[next(iter(ways))]
    print(f"\none pass over {n} images of {args.size}x{args.size} in random order, batch {bs}, best of {args.repeats}:")
    print(f"  {'':32} {'uint8 batches':>15} {'ratio':>7}   {'BatchLoader on ' + device.type:>20} {'ratio':>7}")
    for name, rate in rates.items():
        print(f"  {name:32} {rate:>10.0f} im/s {rate / folder_rate:>6.1f}x   "
              f"{end_to_end[name]:>15.0f} im/s {end_to_end[name] / folder_e2e:>6.1f}x")  # fmt: skip
    print(f"  bulk read of the cache into memory: {bulk:.2f} s ({n / bulk:.0f} im/s); first epoch in memory, "
          f"bulk read included: {first_epoch:.0f} im/s ({first_epoch / folder_rate:.1f}x)")  # fmt: skip
    return {
        "images": n,
        "size": args.size,
        "source_size": args.source_size or args.size,
        "format": args.format,
        "workers": w,
        "cache_build_images_per_s": n / cache_s,
        "uint8_images_per_s": rates,
        "bulk_read_images_per_s": n / bulk,
        "first_epoch_in_memory_images_per_s": first_epoch,
        "batchloader_images_per_s": end_to_end,
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


def child_stream(path: Path, batch_size: int, workers: int, mode: str) -> dict:
    """Stream the cache once through an H5Split; report the peak RSS of this process and of its workers.

    ``mode`` ``loader``: uint8 batches out of the engine's DataLoader path (the data path alone);
    ``batchloader``: normalised float batches out of robust's BatchLoader on the CPU.
    """
    import torch
    from torch.utils.data import DataLoader

    from robust.loader import BatchLoader, _collate, _StreamItems
    from robust_datasets.h5cache import H5Split, read_cache

    bundle = read_cache(path, in_memory="no")
    split = bundle.splits["train"]
    assert isinstance(split, H5Split)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    if mode == "batchloader":
        loader = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=batch_size, num_workers=workers)
        batches = loader.batches(order)
    else:
        chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        batches = iter(DataLoader(_StreamItems(split), batch_sampler=chunks, num_workers=workers, collate_fn=_collate))
    baseline = _status_kib("VmRSS")
    samples = []
    start = time.perf_counter()
    for b, batch in enumerate(batches):
        del batch
        if b == 1 or b % 10 == 0:
            samples.append(_status_kib("VmRSS") / 1024)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images_per_s": len(split) / seconds,
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_after_first_batches_mib": samples[1] if len(samples) > 1 else samples[0],
        "rss_max_sampled_mib": max(samples),
        "rss_last_sampled_mib": samples[-1],
        "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
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
        ("H5Split -> DataLoader, uint8 batches", "loader", None),
        ("H5Split -> BatchLoader on cpu", "batchloader", None),
        ("H5Split -> BatchLoader on cpu, MALLOC_MMAP_THRESHOLD_=1MiB", "batchloader", FIXED_MMAP_THRESHOLD),
    ):
        r = streams[label] = run_child("stream", str(path), str(bs), "2", mode, env=env)
        print(f"  {label} (2 workers, batch {bs}): main peak {r['peak_rss_mib']:.0f} "
              f"(before the pass {r['baseline_rss_mib']:.0f}, after 2 batches {r['rss_after_first_batches_mib']:.0f}, "
              f"highest sample {r['rss_max_sampled_mib']:.0f}, last {r['rss_last_sampled_mib']:.0f}); "
              f"largest worker peak {r['worker_peak_rss_mib']:.0f}; {r['images_per_s']:.0f} images/s")  # fmt: skip
    return {"images": n, "size": size, "decoded_mib": decoded_mib, "write": written, "stream": streams}


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, *rest = sys.argv[2:]
        if kind == "write":
            out = child_write(Path(path), int(rest[0]), int(rest[1]))
        else:
            out = child_stream(Path(path), int(rest[0]), int(rest[1]), rest[2])
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
    parser.add_argument("--repeats", type=int, default=1, help="Timed passes per way of reading (best is kept).")
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
