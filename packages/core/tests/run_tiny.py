"""``python packages/core/tests/run_tiny.py ARGS``: the ``robust`` command line in a real process, with the
kit's tiny dataset registered, and optionally killed by SIGKILL at a chosen file write.

``ROBUST_TEST_KILL=N`` kills the process at the Nth atomic rename (``os.replace``) it makes:
``ROBUST_TEST_KILL_WHEN=before`` (default) just before it (the complete temporary file is left behind,
as when a kill lands in the middle of a checkpoint or history write), ``after`` just after it.
``ROBUST_TEST_COUNT=FILE`` writes how many renames the process made, to choose N from.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path


def _install_kill_hook() -> None:
    kill_at = int(os.environ.get("ROBUST_TEST_KILL", "0"))
    after = os.environ.get("ROBUST_TEST_KILL_WHEN", "before") == "after"
    count_file = os.environ.get("ROBUST_TEST_COUNT")
    real_replace = os.replace
    calls = 0

    def replace(src, dst, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == kill_at and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if calls == kill_at and after:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    if count_file:
        atexit.register(lambda: Path(count_file).write_text(str(calls)))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from robust.plugins import load_plugins, pm
    from robust.registry import reset_registry
    from robust.testing import TinyDatasetPlugin

    load_plugins()
    pm.register(TinyDatasetPlugin(), name="tiny-test-plugin")
    reset_registry()
    _install_kill_hook()
    from robust.cli import cli

    cli(prog_name="robust")


if __name__ == "__main__":
    main()
