"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Results, checkpoints and dataset caches are all written through here: the content goes to a
temporary file in the same directory, is flushed to disk, then renamed over the target. A process
killed mid-write leaves its temporary file (``.NAME.XXXX.tmp``) behind: :func:`remove_leftovers`
clears them when the run starts again. A full disk (or a read-only one) is a :class:`WriteError`
naming the file; the previous version of the file is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from robust.errors import WriteError

TMP_SUFFIX = ".tmp"
#: errno values that are the user's environment, not a bug: said in one paragraph.
ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        error = _write_error(path, exc)
        if error is exc:
            raise
        raise error from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and caches get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        error = _write_error(path, exc)
        if error is exc:
            raise
        raise error from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_error(path: Path, exc: BaseException) -> BaseException:
    """A full or read-only disk as one paragraph naming the file; any other error unchanged."""
    code = getattr(exc, "errno", None)
    if code is None:  # h5py and torch put the errno (or its text) in the message only
        text = str(exc)
        code = next((c for c in ENVIRONMENT_ERRORS if f"errno = {c}," in text or os.strerror(c) in text), None)
    if code not in ENVIRONMENT_ERRORS:
        return exc
    return WriteError(
        f"Cannot write {str(path)!r}: {os.strerror(code)}. The previous version of the file (if any) is intact "
        "and nothing already written was lost. Free some disk space (or fix the permissions), then run the "
        "command again; an interrupted run continues with `robust run ... --resume --out RUN_DIR`."
    )


def remove_leftovers(directory: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``directory`` (not below it).
    Only call it while no one else writes there (a run directory under its lock)."""
    removed = []
    for path in Path(directory).glob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
