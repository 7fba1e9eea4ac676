"""One writer per run directory: a second writer is refused with the holder's pid; the OS frees the
lock of a process that dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from robust.errors import RunDirError
from robust.runlock import LOCK, PID, RunLock
from robust.testing import Crash, CrashAt

from .test_engine import make_run
from .tiny import TinyPlugin

RUN_TINY = Path(__file__).with_name("run_tiny.py")
HOLD = (
    "import sys, time\n"
    "from robust.runlock import RunLock\n"
    "lock = RunLock(sys.argv[1], 'robust run').acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of ``tmp_path / 'run'`` until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def interrupted_run(out: Path, register_plugin) -> None:
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(out).fit()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, holder):
    with pytest.raises(RunDirError, match=rf"pid {holder.pid} .*one process writes a run directory at a time"):
        make_run(tmp_path / "run")
    assert holder.poll() is None


def test_a_killed_holder_frees_the_lock(tmp_path, register_plugin):
    interrupted_run(tmp_path / "run", register_plugin)
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {process.pid}"):
            make_run(tmp_path / "run", resume=True)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.wait()
    assert (tmp_path / "run" / PID).is_file(), "a SIGKILL leaves the pid record; the lock is what counts"
    summary = make_run(tmp_path / "run", resume=True).fit()
    assert summary["selection"]["last"]["epoch"] == 3


def test_in_one_process_a_second_writer_is_refused_and_the_lock_ends_with_the_run(tmp_path, register_plugin):
    interrupted_run(tmp_path / "run", register_plugin)
    first = make_run(tmp_path / "run", resume=True)
    with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
        make_run(tmp_path / "run", resume=True)
    first.fit()
    assert not (tmp_path / "run" / PID).exists()
    with RunLock(tmp_path / "run"):  # free again
        pass


def test_a_failed_set_up_releases_the_lock_and_leaves_no_directory(tmp_path):
    from robust.engine import Run
    from robust.errors import DataError
    from robust.resolve import resolve_run_config

    class MissingData(Run):
        def _load_data(self):
            raise DataError("no data here")

    resolved = resolve_run_config("erm", dataset="tiny", sets=["lr=0.05"], flags={"epochs": 1})
    with pytest.raises(DataError):
        MissingData(resolved, tmp_path / "new", quiet=True)
    assert not (tmp_path / "new").exists()
    make_run(tmp_path / "new", epochs=1).fit()  # nothing left that blocks the next start


def test_a_real_robust_run_resume_is_refused_while_another_holds_the_run(tmp_path, register_plugin):
    interrupted_run(tmp_path / "run", register_plugin)
    with RunLock(tmp_path / "run"):
        result = subprocess.run(
            [sys.executable, str(RUN_TINY), "run", "erm", "--resume", "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("Error:") and "Traceback" not in err and "\n\n" not in err, err
    assert f"pid {os.getpid()}" in err and str(tmp_path / "run") in err
    assert (tmp_path / "run" / LOCK).exists()
