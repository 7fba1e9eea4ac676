"""Fault injection: a real `robust run` killed by SIGKILL in the middle of its file writes, then
continued as a user (or a sweep) would: the final weights, metrics and history equal those of an
uninterrupted run, and no temporary file remains.

The kills land at the Nth atomic rename of the process (``run_tiny.py`` beside this file): just before it
(the complete temporary file of a checkpoint, history or summary write is left behind) or just after.
With checkpoints every step, the 16 renames of this run are: the lock's pid, config.json, three
mid-epoch checkpoints, history.h5, three best checkpoints, three checkpoints, history.h5, last.pt at
the phase end, phase-train.pt, summary.json.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robust.checkpoint import load_checkpoint
from robust.results import RunDir, read_history

RUN_TINY = Path(__file__).with_name("run_tiny.py")
ARGS = [
    "run",
    "erm",
    "--dataset",
    "tiny",
    "--epochs",
    "2",
    "--seed",
    "3",
    "--set",
    "lr=0.05",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.checkpoint_every_steps=1",
    "-q",
]
RENAMES = 16


def tiny_robust(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN_TINY), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=300,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "full"
    count = out.parent / "count"
    result = tiny_robust(*ARGS, "--out", str(out), ROBUST_TEST_COUNT=str(count))
    assert result.returncode == 0, result.stderr
    assert int(count.read_text()) == RENAMES, "the kill points below assume this many renames"
    return out


def killed_then_continued(out: Path, kill_at: int, when: str) -> None:
    killed = tiny_robust(*ARGS, "--out", str(out), ROBUST_TEST_KILL=str(kill_at), ROBUST_TEST_KILL_WHEN=when)
    assert killed.returncode == -9, killed.stderr
    # What a user (or a sweep relaunch) does: resume a run that has a config, start one that has not.
    if (out / "config.json").is_file():
        result = tiny_robust("run", "erm", "--resume", "--out", str(out), "-q")
    else:
        result = tiny_robust(*ARGS, "--out", str(out))
    assert result.returncode == 0, result.stderr


def assert_same_run(full: Path, cut: Path) -> None:
    weights = load_checkpoint(full / "checkpoints" / "last.pt")["method"]["modules"]
    resumed = load_checkpoint(cut / "checkpoints" / "last.pt")["method"]["modules"]
    assert weights.keys() == resumed.keys()
    for key, value in weights.items():
        assert torch.equal(value, resumed[key]), key
    a, b = RunDir(full).read_summary(), RunDir(cut).read_summary()
    for rule, chosen in a["selection"].items():
        assert b["selection"][rule]["metrics"] == chosen["metrics"], rule
        assert b["selection"][rule]["step"] == chosen["step"], rule
    history, again = read_history(full / "history.h5"), read_history(cut / "history.h5")
    assert history.keys() == again.keys()
    for key, column in history.items():
        assert np.array_equal(column, again[key], equal_nan=column.dtype.kind == "f"), key
    assert not any(math.isnan(v) for v in again["train/loss"])
    leftovers = [p for p in cut.rglob("*") if p.name.endswith(".tmp") or ".rerun-backup" in p.parts]
    assert not leftovers, leftovers


@pytest.mark.parametrize(
    ("kill_at", "when"),
    [(4, "before"), (6, "before"), (8, "after")],
    ids=["mid-epoch-checkpoint", "history-write", "after-a-best-copy"],
)
@pytest.mark.slow
def test_killed_during_a_write_then_resumed_equals_uninterrupted(uninterrupted, tmp_path, kill_at, when):
    killed_then_continued(tmp_path / "cut", kill_at, when)
    assert_same_run(uninterrupted, tmp_path / "cut")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ROBUST_SLOW_TESTS"), reason="every kill point: ~3 min; ROBUST_SLOW_TESTS=1")
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("kill_at", range(1, RENAMES + 1))
def test_every_kill_point(uninterrupted, tmp_path, kill_at, when):
    if kill_at == RENAMES and when == "after":
        pytest.skip("killed after its last write: the run has finished")
    killed_then_continued(tmp_path / "cut", kill_at, when)
    assert_same_run(uninterrupted, tmp_path / "cut")
