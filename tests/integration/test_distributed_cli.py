"""`robust run --nproc 2` (torchrun itself) on a generated dataset of robust-datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_cli_nproc_launches_torchrun(tmp_path):
    """`robust run --nproc 2` on a generated dataset: torchrun starts two processes, and the run
    reports what one process with the same global batch reports."""
    env = {**os.environ, "ROBUST_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    args = ["erm", "--dataset", "synthetic-cmnist", "--epochs", "1", "--device", "cpu", "-q"]
    args += ["--set", "train.batch_size=128", "--set", "dataset.n_train=2000"]
    for n in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "robust", "run", *args, "--out", str(tmp_path / f"p{n}"), "--nproc", str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    one = json.loads((tmp_path / "p1" / "summary.json").read_text())
    two = json.loads((tmp_path / "p2" / "summary.json").read_text())
    assert (one["train"]["processes"], two["train"]["processes"]) == (1, 2)
    for key in ("test/avg_acc", "test/worst_group_acc", "val/loss"):
        assert two["selection"]["last"]["metrics"][key] == pytest.approx(
            one["selection"]["last"]["metrics"][key], rel=1e-4, abs=1e-5
        ), key
