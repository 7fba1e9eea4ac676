"""LfF on two CPU processes (gloo): a biased and a debiased model with per-sample loss EMAs train as
one process with the same global batch. The workers are real processes started with
``torch.multiprocessing.spawn`` and the environment torchrun would give them."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from robust import distributed
from robust.checkpoint import load_checkpoint
from robust.engine import Run
from robust.plugins import pm
from robust.registry import reset_registry
from robust.resolve import resolve_run_config
from robust.testing import TinyDatasetPlugin

SETS = ("train.augment=none", "train.batch_size=32", "train.amp=off")


def _run(out: Path, sets: tuple[str, ...], epochs: int) -> tuple[dict, Run]:
    resolved = resolve_run_config("lff", dataset="tiny", sets=list(sets), flags={"epochs": epochs, "device": "cpu"})
    run = Run(resolved, out, quiet=True)
    return run.fit(), run


def _worker(rank: int, world: int, port: int, out: str, sets, epochs: int):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    pm.register(TinyDatasetPlugin(), "tiny-test-plugin")
    reset_registry()
    try:
        _run(Path(out), tuple(sets), epochs)
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(out: Path, sets=SETS, epochs: int = 3) -> dict:
    mp.spawn(_worker, args=(2, _free_port(), str(out), sets, epochs), nprocs=2, join=True)
    return json.loads((out / "summary.json").read_text())


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / "last.pt")["method"]["modules"]


@pytest.fixture
def tiny(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


@pytest.mark.slow
def test_lff_two_models_and_per_sample_state_on_two_processes(tmp_path, tiny):
    """LfF (a biased and a debiased model, per-sample loss EMAs): 2 processes match 1 process."""
    one, _ = _run(tmp_path / "one", SETS, epochs=3)
    two = run_two(tmp_path / "two")
    ema_one, ema_two = weights(tmp_path / "one"), weights(tmp_path / "two")
    tables = [k for k in ema_one if "ema" in k]
    assert tables, "LfF keeps per-sample EMA tables"
    for key in ema_one:
        torch.testing.assert_close(ema_two[key], ema_one[key], rtol=1e-4, atol=1e-5)
    for key, value in one["selection"]["last"]["metrics"].items():
        assert two["selection"]["last"]["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
