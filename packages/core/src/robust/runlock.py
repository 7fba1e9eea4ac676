"""One writer per run directory: an OS-level lock held for as long as a command writes there.

The lock is an ``flock`` on ``RUN/.run.lock`` (the ``filelock`` package): the operating system
releases it when its holder exits or dies, even by SIGKILL, so a crashed run never leaves a stale
lock behind. The holder's pid, host and command are written beside it, in ``RUN/.run.pid`` (not in
the lock file: some filelock versions truncate that file when another process tries the lock), so
that a second writer can say who holds the directory. Under torchrun only rank 0 writes, so only
rank 0 locks.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from robust.atomic import atomic_write_text
from robust.errors import RunDirError

LOCK = ".run.lock"
PID = ".run.pid"


class RunLock:
    """The lock of one run directory (created if missing); ``acquire`` fails at once when it is held."""

    def __init__(self, directory: str | Path, command: str = "robust run") -> None:
        self.directory = Path(directory)
        self.command = command
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.directory / LOCK), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(
                f"Run directory {str(self.directory)!r} is being written by another robust process "
                f"({holder(self.directory)}); one process writes a run directory at a time, so this "
                f"{self.command} was not started. Wait for that process to finish, or stop it (a process "
                "that is killed or dies releases the lock by itself), then try again."
            ) from None
        self._lock = lock
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        atomic_write_text(self.directory / PID, json.dumps(record) + "\n")
        return self

    def release(self) -> None:
        """Drop the pid record, then the lock (the other order could delete the next holder's record)."""
        if self._lock is None:
            return
        (self.directory / PID).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def holder(directory: Path) -> str:
    """Who holds the lock, as the holder recorded it (best effort: it may be writing the record now)."""
    try:
        record = json.loads((directory / PID).read_text(encoding="utf-8"))
        return f"pid {int(record['pid'])} on host {record.get('host', '?')}, {record.get('command', 'robust')}"
    except (OSError, ValueError, TypeError, KeyError):
        return "its pid is not recorded yet"
