"""``robust data``: which datasets are here, whether their files are intact, and their HDF5 caches.

* ``robust data status`` reads only the registrations' metadata (``folder``, ``files``), so it works
  before any dataset module is importable and never imports torch;
* ``robust data verify NAME`` builds the dataset as ``robust run`` would, with its real factory
  (not the cache), counts every split and group against the registration's ``expected_counts``
  and decodes every streamed image, reporting every bad file, not just the first;
* ``robust data cache NAME`` writes the HDF5 cache (:mod:`robust_datasets.h5cache`);
* ``robust data make-cmnist`` / ``make-cifar10c`` come from :mod:`robust_datasets.lff_commands`.

Importing this module does not import torch (``robust --help`` imports it); commands do.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import click

from robust_datasets.lff_commands import make_cifar10c_command, make_cmnist_command

CACHE_DIR = ".cache"  # = robust_datasets.h5cache.CACHE_DIR (not imported here: that module imports torch)
OTHER_SECTIONS = ("method", "model", "train")
# Options that change how images look or are held, never how many there are: expected_counts still apply.
# Options that change how images look or where files are, never which samples are in which group.
COUNT_NEUTRAL = frozenset(
    {
        "root",
        "image_size",
        "in_memory",
        "memory_limit_gb",
        "crop_fraction",
        "center_crop",
        "train_augment",
        "masks_dir",
        "masks",
        "metadata",
        "image_dir",
    }
)

data_root_option = click.option(
    "--data-root", type=click.Path(file_okay=False), help="Where datasets live (default $ROBUST_DATA)."
)
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A dataset option, e.g. --set image_size=128 or --set dataset.root=/data/wb. Repeatable.",
)
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), help="Decoding threads (default: 2 per core, at most 8)."
)


@click.group("data")
def data() -> None:
    """Datasets on this machine: list them, verify their files, cache them as HDF5.

    \b
      robust data status                     every dataset and whether it is here
      robust data verify waterbirds        counts per split and group, every image decoded
      robust data cache waterbirds         decode once into DATA_ROOT/.cache/*.h5 (fast reads)
      robust data make-cmnist              generate LfF's Colored MNIST from the MNIST files
      robust data download cifar10         fetch, verify and unpack a dataset (--list: which ones)
    """


data.add_command(make_cmnist_command)  # robust_datasets.lff_commands: torch-free until they run
data.add_command(make_cifar10c_command)


def _root(explicit: str | None) -> Path:
    from robust.api import data_root

    return data_root(explicit)


def _cache_files(root: Path, name: str) -> list[Path]:
    directory = root / CACHE_DIR
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.h5")
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))


def dataset_status(entry: Any, root: Path) -> dict[str, Any]:
    """Whether a registered dataset is here, from its metadata only (no import of its module)."""
    from robust.api import plugin_distribution

    metadata = entry.metadata
    caches = _cache_files(root, entry.name)
    record: dict[str, Any] = {
        "name": entry.name,
        "package": plugin_distribution(entry.plugin),
        "status": "generated",
        "cached": bool(caches),
        "cache_files": [str(p) for p in caches],
        "path": None,
        "missing": [],
    }
    folder = metadata.get("folder")
    if folder is not None:
        base = root / folder
        required = [base, *(base / f for f in metadata.get("files", []))]
        missing = [str(p) for p in required if not p.exists()]
        record.update(status="missing" if missing else "present", path=str(base), missing=missing)
        record["source"] = metadata.get("source")
    elif metadata.get("user_data"):  # csv: the files are wherever the user's CSV says
        record["status"] = "user"
    return record


@data.command("status")
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(data_root: str | None, as_json: bool) -> None:
    """List every dataset: present, missing, generated, cached.

    On-disk datasets are present when their folder and the files their registration names exist
    under the data root (--data-root, then $ROBUST_DATA); cached when an HDF5 cache exists; user
    datasets (csv:PATH) are wherever their metadata CSV says.
    """
    from robust.api import get_registry

    root = _root(data_root)
    records = [dataset_status(entry, root) for entry in get_registry().entries("dataset")]
    if as_json:
        click.echo(json.dumps({"data_root": str(root), "datasets": records}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colours = {"present": "green", "missing": "red", "generated": "cyan", "user": "magenta"}
    table = Table(title=f"datasets under {root}")
    for column in ("name", "package", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    for record in records:
        status = Text(record["status"], style=colours[record["status"]])
        if record["cached"]:
            status.append(" + cached", style="bold")
        table.add_row(record["name"], record["package"], status, Text(record["path"] or ""))
    Console().print(table)


# `robust data status`, its name before 2026-12: still works, not shown (`robust list datasets` lists what is
# registered; `robust data status` what is on disk).
data.add_command(click.Command("list", callback=list_command.callback, params=list_command.params, hidden=True))


@data.command()
@click.argument("name", required=False)
@data_root_option
@click.option("--url", metavar="URL", help="Download from this URL instead (a mirror of the same archive).")
@click.option("--force", is_flag=True, help="Download and unpack again, replacing the dataset's folder.")
@click.option("--list", "list_only", is_flag=True, help="List the datasets that can be downloaded.")
def download(name: str | None, data_root: str | None, url: str | None, force: bool, list_only: bool) -> None:
    """Download dataset NAME into the data root: resume, verify its checksum, unpack.

    The archive goes to DATA_ROOT/.downloads (an interrupted download resumes), is checked against
    the checksum its authors publish, and is unpacked into DATA_ROOT/FOLDER in one step (never a
    half-unpacked folder). An existing folder is left alone unless --force. Without NAME (or with
    --list): the datasets that can be downloaded.
    """
    from robust_datasets.download import download_dataset, list_archives

    root = _root(data_root)
    if list_only or name is None:
        click.echo(f"Downloadable datasets (data root {root}):")
        for record in list_archives(root):
            aliases = f" (also {', '.join(record['aliases'])})" if record["aliases"] else ""
            state = "present" if record["present"] else "not here"
            checksum = record["checksum"] or "no published checksum"
            click.echo(f"  {record['name']}{aliases}: {record['folder']}/, {state}; {checksum}; {record['url']}")
        click.echo("Run `robust data download NAME`.")
        return
    download_dataset(name, root, url=url, force=force)


# -- building a dataset's config as `robust run` does ---------------------------------------------


def dataset_options(name: str, sets: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The registry entry of dataset ``name`` and the options the user gave (not validated yet).

    ``--set`` keys may be bare or ``dataset.``-prefixed; a dataset-name pattern's options
    (``resolve_dataset`` hook) come first, as in ``robust run``.
    """
    from robust.api import ConfigError, deep_merge, get_registry, nest, parse_set, resolve_dataset_name

    entry, options = resolve_dataset_name(get_registry(), name)
    for item in sets:
        path, value = parse_set(item)
        if path[0] == "dataset" and len(path) > 1:
            path = path[1:]
        elif path[0] in OTHER_SECTIONS:
            raise ConfigError(
                f"`robust data` takes dataset options only, got --set {item!r}. Pass KEY=VALUE or "
                f"dataset.KEY=VALUE; `robust info {entry.name}` lists the options."
            )
        options = deep_merge(options, nest(path, value))
    return entry, options


def dataset_config(entry: Any, options: dict[str, Any], *, in_memory: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(config object for the factory, its validated options with defaults filled in).

    ``in_memory`` overrides the option of that name when the dataset has it.
    """
    from robust.api import validate_section

    config_class = entry.load_config()
    values = validate_section("dataset", entry.name, options, config_class)
    if in_memory is not None and config_class is not None and "in_memory" in config_class.model_fields:
        values["in_memory"] = in_memory
    config = config_class.model_validate(values) if config_class is not None else None
    return config, values


def check_files(entry: Any, options: dict[str, Any], root: Path) -> None:
    """The registration's folder and files exist (before importing the dataset's module)."""
    from robust.api import ConfigError, expand_user
    from robust_datasets.missing import missing_dataset, require

    folder = entry.metadata.get("folder")
    if folder is None:
        return
    try:
        base = expand_user(options["root"]) if options.get("root") else root / folder
    except ValueError as exc:
        raise ConfigError(f"dataset.root: {exc}. Give an existing folder.") from None
    files = list(entry.metadata.get("files", []))
    source = entry.metadata.get("source", "the dataset's authors")
    if not base.is_dir():
        raise missing_dataset(entry.name, base, files or [f"{base.name}/"], source, "The folder does not exist.")
    require(entry.name, base, files, source)


def _build(entry: Any, config: Any, root: Path):
    """The dataset from its own files: the factory a cached_dataset wrapper calls, not the cache."""
    from robust.api import DataError, DatasetBundle

    factory = entry.load()
    bundle = getattr(factory, "build", factory)(config, root)
    if not isinstance(bundle, DatasetBundle):
        raise DataError(f"Dataset {entry.name!r} returned {type(bundle).__name__}, not a robust.data.DatasetBundle.")
    return bundle


# -- verify -----------------------------------------------------------------------------------------


@data.command()
@click.argument("name")
@data_root_option
@set_option
@threads_option
@click.pass_context
def verify(ctx: click.Context, name: str, data_root: str | None, sets: tuple[str, ...], threads: int | None) -> None:
    """Check NAME: counts per split and group, decode every image.

    The dataset is loaded from its files as `robust run` would (never from its cache). Counts are compared with the registration's expected counts (those of the standard release,
    so only when the options that change counts are at their defaults). Exit status 1 when any
    count differs or any image is missing or corrupt; every bad file is listed.
    """
    from rich.console import Console

    root = _root(data_root)
    entry, options = dataset_options(name, sets)
    check_files(entry, options, root)
    config, values = dataset_config(entry, options, in_memory="no")  # stream: we decode every file
    console = Console()
    bundle = _build(entry, config, root)
    expected, why_not = _expected_counts(entry, values)
    problems = _count_table(console, entry.name, bundle, expected, why_not)
    problems += _decode_everything(bundle, threads)
    n_images = sum(len(s) for s in [*bundle.splits.values(), *bundle.aux.values()])
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/red] in {entry.name}:")
        for problem in problems:
            console.print(f"  - {problem}", markup=False, highlight=False, soft_wrap=True)
        ctx.exit(1)
    console.print(f"[green]OK[/green]: {entry.name}, {n_images} images, every split complete and every image decodes.")


def _expected_counts(entry: Any, values: dict[str, Any]) -> tuple[dict[str, list[int]], str]:
    """The registration's expected counts, unless options that change counts differ from the defaults."""
    from robust.api import ConfigError, validate_section

    expected = entry.metadata.get("expected_counts") or {}
    if not expected:
        return {}, "the registration gives no expected counts"
    try:
        defaults = validate_section("dataset", entry.name, {}, entry.load_config())
    except ConfigError:
        return expected, ""
    changed = sorted(k for k, v in values.items() if k not in COUNT_NEUTRAL and defaults.get(k) != v)
    if changed:
        return {}, f"options differ from the defaults ({', '.join(f'{k}={values[k]!r}' for k in changed)})"
    return expected, ""


def _count_table(console: Any, name: str, bundle: Any, expected: dict[str, list[int]], why_not: str) -> list[str]:
    """Print counts (a row per group, a column per split); return the mismatches with the expected counts."""
    import torch
    from rich.table import Table
    from rich.text import Text

    info = bundle.info
    splits = [*bundle.splits.items(), *((f"aux:{k}", v) for k, v in bundle.aux.items())]
    table = Table(title=f"{name}: images per split and group")
    table.add_column("group")
    for split_name, _ in splits:
        table.add_column(split_name, justify="right")
    problems: list[str] = []
    totals: list[Text] = []
    per_group: list[list[int] | None] = []
    for split_name, split in splits:
        want = expected.get(split_name)
        total_want = sum(want) if want is not None else None
        totals.append(_cell(len(split), total_want))
        if total_want is not None and total_want != len(split):
            problems.append(f"split {split_name!r} has {len(split)} images, expected {total_want}")
        counts = None
        if split.groups is not None:
            counts = torch.bincount(split.groups, minlength=info.num_groups).tolist()
            for g, count in enumerate(counts):
                want_g = want[g] if want is not None and g < len(want) else None
                if want is not None and want_g != count:
                    problems.append(
                        f"split {split_name!r} group {g} ({_group_name(info, g)}) has {count} images, expected {want_g}"
                    )
        per_group.append(counts)
    table.add_row("(all)", *totals, end_section=True)
    n_groups = max([info.num_groups, *(len(c) for c in per_group if c is not None)])
    for g in range(n_groups):
        cells = []
        for (split_name, _), counts in zip(splits, per_group, strict=True):
            want = expected.get(split_name)
            if counts is None:
                cells.append(Text("-", style="dim"))
            else:
                count = counts[g] if g < len(counts) else 0
                cells.append(_cell(count, want[g] if want is not None and g < len(want) else None))
        table.add_row(Text(_group_name(info, g)), *cells)
    console.print(table)
    if why_not:
        console.print(f"Expected counts not compared: {why_not}.", markup=False, highlight=False)
    return problems


def _group_name(info: Any, g: int) -> str:
    return info.group_names[g] if g < len(info.group_names) else f"group {g}"


def _cell(count: int, expected: int | None) -> Any:
    """The count, green when it matches the expected one, red with the expected one when not."""
    from rich.text import Text

    if expected is None:
        return Text(str(count))
    if expected == count:
        return Text(f"{count} ✓", style="green")
    return Text(f"{count} ✗ (expected {expected})", style="bold red")


def _decode_everything(bundle: Any, threads: int | None) -> list[str]:
    """Decode every image of every streamed split; one line per image that fails."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import Progress

    from robust.api import StreamSplit

    streams = [
        (name, split)
        for name, split in [*bundle.splits.items(), *((f"aux:{k}", v) for k, v in bundle.aux.items())]
        if isinstance(split, StreamSplit)
    ]
    if not streams:
        return []
    expected_shape = tuple(bundle.info.input_shape)
    threads = threads or max(1, min(8, 2 * (os.cpu_count() or 1)))
    problems: list[str] = []
    with (
        ThreadPoolExecutor(max_workers=threads) as pool,
        Progress(console=Console(stderr=True), transient=True) as progress,
    ):
        for name, split in streams:
            task = progress.add_task(f"decoding {name}", total=len(split))

            def check(index: int, split: Any = split, name: str = name) -> str | None:
                try:
                    image, _ = split.read(index)
                except Exception as exc:  # every failure is reported, whatever raised it
                    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                    where = _path_of(split, index)
                    return (
                        f"split {name!r} image {index}{where if where.strip(' ()') not in message else ''}: {message}"
                    )
                if tuple(image.shape) != expected_shape:
                    return (
                        f"split {name!r} image {index}{_path_of(split, index)} decodes to {tuple(image.shape)}, "
                        f"not the dataset's input shape {expected_shape}"
                    )
                return None

            for start in range(0, len(split), 1024):  # bounded: results of 1024 images at a time
                results = list(pool.map(check, range(start, min(len(split), start + 1024))))
                problems += [r for r in results if r is not None]
                progress.advance(task, len(results))
    return problems


def _path_of(split: Any, index: int) -> str:
    paths = getattr(split, "paths", None)
    return f" ({paths[index]})" if paths is not None else ""


# -- cache ------------------------------------------------------------------------------------------


@data.command()
@click.argument("name")
@data_root_option
@set_option
@click.option("--lzf", is_flag=True, help="Compress images with lzf (smaller file; slower reads, image by image).")
@threads_option
def cache(name: str, data_root: str | None, sets: tuple[str, ...], lzf: bool, threads: int | None) -> None:
    """Decode dataset NAME once into an HDF5 file (fast reads).

    The file is DATA_ROOT/.cache/NAME-FINGERPRINT.h5; the fingerprint hashes the options. Datasets whose factory is wrapped in robust_datasets.h5cache.cached_dataset read the file
    from then on, whenever they are loaded with the same options (`robust run --set ...`).
    """
    from rich.console import Console
    from rich.progress import Progress

    from robust_datasets.h5cache import build_cache

    root = _root(data_root)
    entry, options = dataset_options(name, sets)
    check_files(entry, options, root)
    config, _ = dataset_config(entry, options, in_memory="no")  # stream: memory stays bounded
    factory = entry.load()
    start = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"caching {entry.name}", total=None)
        counted: list[int] = []

        def total(n: int) -> None:
            counted.append(n)
            progress.update(task, total=n)

        path = build_cache(
            entry.name,
            factory,
            config,
            root,
            compression="lzf" if lzf else None,
            threads=threads,
            progress=lambda n: progress.advance(task, n),
            total=total,
        )
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    n_images = counted[0] if counted else 0
    click.echo(f"Wrote {path}")
    click.echo(f"  size: {size / 2**20:.1f} MiB ({n_images} images{', lzf' if lzf else ''})")
    click.echo(f"  time: {elapsed:.2f} s ({n_images / max(elapsed, 1e-9):.0f} images/s)")
    if not hasattr(factory, "build"):
        click.echo(
            f"Note: the {entry.name} factory is not wrapped in robust_datasets.h5cache.cached_dataset, so "
            "`robust run` does not read this file yet (it keeps building the dataset its own way).",
            err=True,
        )
