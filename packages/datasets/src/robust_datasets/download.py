"""``robust data download NAME``: fetch a dataset's archive, check it, unpack it into the data root.

Only datasets whose authors publish a plain archive at a stable URL are in :data:`ARCHIVES`; the
others (CelebA, the DisEnt releases on Google Drive, ...) say where to get them by hand.

The steps, each safe to interrupt:

1. **download** (stdlib ``urllib``) into ``DATA_ROOT/.downloads/<file>.part``. When a ``.part``
   is already there, only the rest is asked for (an HTTP ``Range`` request); a server that
   ignores it (200 instead of 206) sends the whole file again, and the ``.part`` starts over.
   A finished download is renamed to ``DATA_ROOT/.downloads/<file>``;
2. **verify** it against the checksum upstream publishes (MD5 for CIFAR, which is what its page
   gives). A mismatch renames the file to ``<file>.bad`` (kept for inspection; the next run
   downloads afresh). An archive without a published checksum (``checksum=None``) is not
   verified: its SHA-256 is printed, and said to be unverified;
3. **unpack** into a temporary folder beside the target (``DATA_ROOT/.<folder>.*.extracting``),
   refusing members with absolute paths or ``..`` (and, through tarfile's ``filter="data"``,
   links out of the folder and special files), then rename the dataset's folder into place, so
   ``DATA_ROOT/<folder>`` is either absent or complete, never half unpacked. The archive is
   deleted afterwards.

``folder`` is the registration's ``folder`` (:mod:`robust_datasets.plugin`): a downloaded dataset
is where ``robust data status`` and the loaders look. This module does not import torch.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import click

from robust.api import DataError

DOWNLOADS_DIR = ".downloads"
PART_SUFFIX = ".part"
BAD_SUFFIX = ".bad"
CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "robust-datasets (python urllib)"
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # ours to fix, not the file's


@dataclass(frozen=True)
class Archive:
    """One downloadable dataset: where its archive is and what it unpacks to."""

    name: str
    urls: tuple[str, ...]  # tried in order; --url replaces them
    file: str  # the archive's name under DATA_ROOT/.downloads
    checksum: str | None  # "sha256:HEX" or "md5:HEX", as upstream publishes it; None: not published
    format: Literal["tar.gz", "zip"]
    folder: str  # under the data root: the registration's `folder`
    member: str  # the folder inside the archive that becomes `folder` ("" = the archive's top level)
    aliases: tuple[str, ...] = ()  # other registered datasets that read the same folder
    note: str = ""


ARCHIVES: dict[str, Archive] = {
    archive.name: archive
    for archive in (
        Archive(
            name="waterbirds",
            urls=("https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",),
            file="waterbird_complete95_forest2water2.tar.gz",
            checksum=None,  # group_DRO publishes none; not checked here (no network), so never made up
            format="tar.gz",
            folder="waterbird_complete95_forest2water2",
            member="waterbird_complete95_forest2water2",
            note="the group_DRO release (github.com/kohpangwei/group_DRO); the CUB masks are a separate download",
        ),
        Archive(
            name="cifar10",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            file="cifar-10-python.tar.gz",
            checksum="md5:c58f30108f718f92721af3b95e74349a",  # the MD5 on www.cs.toronto.edu/~kriz/cifar.html
            format="tar.gz",
            folder="cifar-10-batches-py",
            member="cifar-10-batches-py",
            aliases=("cifar10-lt", "cifar10-noisy"),
        ),
        Archive(
            name="cifar100",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            file="cifar-100-python.tar.gz",
            checksum="md5:eb9058c3a382ffc7106e4002c42a8d85",  # the MD5 on www.cs.toronto.edu/~kriz/cifar.html
            format="tar.gz",
            folder="cifar-100-python",
            member="cifar-100-python",
            aliases=("cifar100-lt", "cifar100-noisy"),
        ),
    )
}

#: Registered on-disk datasets that cannot be fetched with one plain HTTP request, and why.
BY_HAND: dict[str, str] = {
    **dict.fromkeys(
        ("cmnist", "cifar10c", "bffhq"),
        "DisEnt releases it on Google Drive (github.com/kakaoenterprise/Learning-Debiased-Disentangled), which "
        "has no stable direct URL; download it in a browser, or generate cmnist / cifar10c with "
        "`robust data make-cmnist` / `robust data make-cifar10c`",
    ),
    "celeba": "its authors distribute it through Google Drive and Baidu after accepting their terms "
    "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html); download it in a browser",
}


def find_archive(name: str) -> Archive:
    """The entry for dataset ``name`` (or one of its aliases); a DataError that says what exists otherwise."""
    for archive in ARCHIVES.values():
        if name == archive.name or name in archive.aliases:
            return archive
    known = ", ".join(sorted(ARCHIVES))
    why = BY_HAND.get(name)
    reason = f"{why}." if why else "it is not in the table of datasets with a stable download URL."
    raise DataError(
        f"Dataset {name!r} cannot be downloaded by robust: {reason} Downloadable: {known} "
        f"(`robust data download --list`). For the others, `robust data status` shows where each one goes "
        f"and the error of `robust data verify NAME` says where to get it."
    )


def download_dataset(
    name: str, root: Path, *, url: str | None = None, force: bool = False, timeout: float = TIMEOUT_S
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``root``; return its folder.

    An existing folder is left alone (a message says so) unless ``force``, which downloads the
    archive again and replaces the folder once the new one is unpacked. ``url`` replaces the
    table's URLs (a mirror); the checksum still applies.
    """
    archive = find_archive(name)
    root = Path(root)
    target = root / archive.folder
    if (target.exists() or target.is_symlink()) and not force:
        click.echo(
            f"{archive.name} is already at {target}: nothing to do. Pass --force to download and unpack it again "
            "(the folder is replaced only once the new copy is complete)."
        )
        return target
    downloads = root / DOWNLOADS_DIR
    _mkdir(downloads)
    path = downloads / archive.file
    if force:
        for stale in (path, _with_suffix(path, PART_SUFFIX)):
            stale.unlink(missing_ok=True)
    if path.exists():
        click.echo(f"Using the finished download {path}.")
    else:
        fetch(archive, path, urls=(url,) if url else archive.urls, timeout=timeout)
    verify(archive, path, url=url)
    unpack(archive, path, target)
    path.unlink(missing_ok=True)
    click.echo(f"{archive.name} is ready at {target}.")
    return target


def list_archives(root: Path) -> list[dict[str, object]]:
    """One record per downloadable dataset, with whether its folder is already under ``root``."""
    return [
        {
            "name": archive.name,
            "aliases": list(archive.aliases),
            "folder": archive.folder,
            "present": (Path(root) / archive.folder).exists(),
            "checksum": archive.checksum.split(":")[0] if archive.checksum else None,
            "url": archive.urls[0],
        }
        for archive in ARCHIVES.values()
    ]


# -- download ----------------------------------------------------------------------------------


def fetch(archive: Archive, path: Path, *, urls: tuple[str, ...], timeout: float = TIMEOUT_S) -> None:
    """Download into ``path.part`` (resuming it), then rename it to ``path``; try each URL in turn."""
    part = _with_suffix(path, PART_SUFFIX)
    failures: list[str] = []
    for url in urls:
        try:
            _fetch_one(url, part, timeout)
        except _NetworkError as exc:
            failures.append(f"{url}: {exc}")
            continue
        os.replace(part, path)
        return
    have = part.stat().st_size if part.exists() else 0
    kept = (
        f"The {have / 2**20:.1f} MiB that arrived are kept in {part}: run the same command again to resume. "
        if have
        else ""
    )
    raise DataError(
        f"Could not download {archive.name} ({archive.file}): {'; '.join(failures)}. {kept}"
        f"Check the connection (a proxy is read from $https_proxy), or pass --url with a mirror of {archive.file}."
    )


class _NetworkError(Exception):
    """One URL failed (connection, HTTP status, truncated body): the next one is tried."""


def _fetch_one(url: str, part: Path, timeout: float, *, restarted: bool = False) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing past the .part: it is complete (the checksum decides)
            exc.close()
            return
        raise _NetworkError(f"the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise _NetworkError(_reason(exc)) from None
    with response:
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:  # not the range asked for: start over without one
                if restarted:
                    raise _NetworkError(f"the server answered a range from byte {start}, not {offset}")
                part.unlink()
                response.close()
                _fetch_one(url, part, timeout, restarted=True)
                return
            mode = "ab"
        else:
            if offset:
                click.echo(
                    f"The server ignored the resume request (status {response.status}): downloading from the start."
                )
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            with open(part, mode) as out, _Progress(total, offset, part.name.removesuffix(PART_SUFFIX)) as advance:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _NetworkError(f"the transfer broke off ({_reason(exc)})") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:  # our side: the disk, not the network
            raise DataError(
                f"Could not write {part}: {exc.strerror or exc}. Free some space or pass another --data-root; "
                "what was downloaded so far is kept and the next run resumes it."
            ) from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _NetworkError(f"the transfer broke off after {size} of {total} bytes")


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    if not content_range:
        return None
    unit, _, spec = content_range.strip().partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc).strip() or type(exc).__name__


class _Progress:
    """A click progress bar over bytes on stderr when the size is known; nothing otherwise."""

    def __init__(self, total: int | None, done: int, label: str) -> None:
        self.total, self.done, self.label = total, done, label
        self.bar = None

    def __enter__(self):
        if self.total is None:
            return lambda n: None
        self.bar = click.progressbar(length=self.total, label=f"downloading {self.label}", file=sys.stderr)
        self.bar.__enter__()
        if self.done:
            self.bar.update(self.done)
        return self.bar.update

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc_info)


# -- verify ------------------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def verify(archive: Archive, path: Path, *, url: str | None = None) -> None:
    """Check ``path`` against the archive's checksum; on a mismatch rename it to ``.bad`` and raise."""
    if archive.checksum is None:
        digest = file_digest(path, "sha256")
        click.echo(
            f"SHA-256 of {archive.file}: {digest}. Not verified: no checksum is published for this archive, so "
            "compare it with a trusted copy if it matters."
        )
        return
    algorithm, _, expected = archive.checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual.lower() == expected.lower():
        click.echo(f"{archive.file}: {algorithm.upper()} verified.")
        return
    bad = _with_suffix(path, BAD_SUFFIX)
    os.replace(path, bad)
    source = url or " / ".join(archive.urls)
    raise DataError(
        f"The download of {archive.name} does not match its checksum: expected {algorithm.upper()} {expected}, "
        f"got {actual} (from {source}). It was not unpacked; the file is kept as {bad} for inspection "
        f"(delete it when done). The transfer was probably corrupted, or the server sent another file: run "
        f"the same command again to download it afresh, or pass --url with a mirror of {archive.file}."
    )


# -- unpack ------------------------------------------------------------------------------------


def unpack(archive: Archive, path: Path, target: Path) -> None:
    """Unpack into a temporary folder beside ``target``, then rename the dataset's folder into place."""
    _mkdir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        try:
            if archive.format == "zip":
                _unzip(path, tmp)
            else:
                _untar(path, tmp)
        except _UnsafeMember as exc:
            bad = _with_suffix(path, BAD_SUFFIX)
            os.replace(path, bad)
            raise DataError(
                f"Refusing to unpack {archive.file}: its member {exc.args[0]!r} would land outside the dataset "
                f"folder ({exc.args[1]}). This is not the archive {archive.name} is released as; nothing was "
                f"unpacked and the file is kept as {bad}. Download it from its official URL "
                f"({archive.urls[0]}) or a trusted mirror (--url)."
            ) from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
                raise DataError(
                    f"Could not unpack {archive.file} into {target.parent}: {exc.strerror}. Free space (or fix the "
                    "permissions) and run the command again; the download is kept."
                ) from None
            bad = _with_suffix(path, BAD_SUFFIX)
            os.replace(path, bad)
            raise DataError(
                f"{archive.file} is not a readable {archive.format} archive ({_reason(exc)}). Nothing was unpacked; "
                f"the file is kept as {bad}. Run the command again to download it afresh, or pass --url with a mirror."
            ) from None
        source = tmp / archive.member if archive.member else tmp
        if not source.is_dir():
            found = ", ".join(sorted(p.name for p in tmp.iterdir())[:5]) or "nothing"
            raise DataError(
                f"{archive.file} has no folder {archive.member!r} at its top level (found: {found}), so it is not "
                f"the release robust expects for {archive.name}. Nothing was put in {target}; the download is kept "
                f"at {path}. Check --url, or delete the file and run the command again."
            )
        _replace_folder(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _UnsafeMember(Exception):
    """A member whose path is absolute or climbs out with ``..``: (name, why)."""


def _check_name(name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive:
        raise _UnsafeMember(name, "an absolute path")
    if ".." in posix.parts:
        raise _UnsafeMember(name, "a '..' component")


def _checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        _check_name(member.name)
        yield member


def _untar(path: Path, destination: Path) -> None:
    if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4
        raise DataError(
            f"Unpacking needs tarfile's safe extraction filter (Python 3.11.4 or newer); this is Python "
            f"{sys.version.split()[0]}. Upgrade Python, or unpack {path} by hand into the data root."
        )
    with tarfile.open(path, "r:*") as tar:
        try:
            tar.extractall(destination, members=_checked(tar), filter="data")
        except tarfile.FilterError as exc:  # a link out of the folder, a device file, ...
            member = getattr(exc, "tarinfo", None)
            raise _UnsafeMember(member.name if member else "?", str(exc)) from None


def _unzip(path: Path, destination: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            _check_name(name)
        archive.extractall(destination)


def _replace_folder(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside first and deleted after."""
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)) / target.name
        os.rename(target, old)
    try:
        os.rename(source, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Could not create {path}: {exc.strerror or exc}. Pass --data-root (or set ROBUST_DATA) to a folder "
            "you can write to."
        ) from None
