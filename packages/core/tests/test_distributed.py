"""Data-parallel runs: two CPU processes (gloo) train as one process with the same global batch.

The workers are real processes started with ``torch.multiprocessing.spawn`` and the environment
torchrun would give them (tests/integration/test_distributed_cli.py goes through ``robust run --nproc 2``,
torchrun itself; robust-disent's tests run LfF's two models over two processes).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from robust import distributed, hookimpl
from robust.checkpoint import load_checkpoint
from robust.engine import Run
from robust.erm import ERM
from robust.plugins import pm
from robust.registry import reset_registry
from robust.resolve import resolve_run_config
from robust.results import read_history

from .tiny import TinyPlugin

EXACT = ("train.augment=none", "train.batch_size=32", "lr=0.05")
pytestmark = pytest.mark.slow  # two processes per run


class CountVisits(ERM):
    """ERM that counts, per training sample, how often it was in a batch (per-sample state) and
    crashes at an evaluation when asked (on every process, as a killed job would stop)."""

    crash_at: int | None = None

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.register_buffer("visits", torch.zeros(ctx.num_train))
        self.evaluations = 0

    def update(self, batch, step):
        self.visits[batch.index] += 1
        return super().update(batch, step)

    def on_evaluation(self, record):
        self.evaluations += 1
        if self.evaluations == CountVisits.crash_at:
            raise KeyboardInterrupt


class DistributedTestPlugin:
    @hookimpl
    def register_methods(self, register):
        register("count-visits", CountVisits)


def _register() -> None:
    pm.register(TinyPlugin(), "tiny-test-plugin")
    pm.register(DistributedTestPlugin(), "distributed-test-plugin")
    reset_registry()


def _run(out: Path, method: str, sets: tuple[str, ...], epochs: int, resume: bool = False) -> tuple[dict, Run]:
    resolved = resolve_run_config(method, dataset="tiny", sets=list(sets), flags={"epochs": epochs, "device": "cpu"})
    run = Run(resolved, out, resume=resume, quiet=True)
    return run.fit(), run


def _worker(rank: int, world: int, port: int, out: str, method: str, sets, epochs: int, resume: bool, crash_at):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    _register()
    CountVisits.crash_at = crash_at
    try:
        _, run = _run(Path(out), method, tuple(sets), epochs, resume)
        # What each process ends with (the test's own file, not the engine's).
        torch.save(run.method.state_dict(), Path(out).parent / f"{Path(out).name}.rank{rank}.pt")
    except KeyboardInterrupt:
        pass
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(out: Path, method: str, sets=EXACT, epochs: int = 3, resume: bool = False, crash_at=None) -> dict | None:
    mp.spawn(_worker, args=(2, _free_port(), str(out), method, sets, epochs, resume, crash_at), nprocs=2, join=True)
    summary = out / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else None


@pytest.fixture
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"), register_plugin(DistributedTestPlugin(), "dist-test"):
        yield


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / "last.pt")["method"]["modules"]


def test_erm_on_two_processes_equals_one_process(tmp_path, tiny):
    """Same global batch (32 = 2 × 16), no augmentation: the same weights to float rounding and the
    same metrics; the evaluation gathered every sample of val and test."""
    one, _ = _run(tmp_path / "one", "erm", EXACT, epochs=3)
    two = run_two(tmp_path / "two", "erm")
    assert two["train"]["processes"] == 2 and one["train"]["steps"] == two["train"]["steps"] == 9
    for key, value in weights(tmp_path / "one").items():
        torch.testing.assert_close(weights(tmp_path / "two")[key], value, rtol=1e-5, atol=1e-6)
    for rule in ("last", "best_val_worst_group"):
        a, b = one["selection"][rule]["metrics"], two["selection"][rule]["metrics"]
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    history = read_history(tmp_path / "two" / "history.h5")
    assert list(history["step"]) == [3, 6, 9]


def test_per_sample_state_is_shared_and_every_process_ends_alike(tmp_path, tiny):
    """Each process sees half of every batch, yet every process's visit table counts every sample
    once per epoch; and all processes end with the same parameters and buffers (BatchNorm included)."""
    run_two(tmp_path / "two", "count-visits", sets=(*EXACT, "model.name=cnn"), epochs=2)
    rank0 = torch.load(tmp_path / "two.rank0.pt")
    rank1 = torch.load(tmp_path / "two.rank1.pt")
    assert torch.equal(rank0["visits"], torch.full((96,), 2.0))
    assert any("running_mean" in key for key in rank0)
    for key, value in rank0.items():
        assert torch.equal(rank1[key], value), key


def test_only_rank_zero_writes_and_resume_continues(tmp_path, tiny):
    """A run over two processes killed at its second evaluation and resumed over two processes ends
    as the uninterrupted one; the run directory holds one set of files."""
    full = run_two(tmp_path / "full", "count-visits", epochs=3)
    assert run_two(tmp_path / "cut", "count-visits", epochs=3, crash_at=2) is None
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["engine"]["epoch"] == 1
    resumed = run_two(tmp_path / "cut", "count-visits", epochs=3, resume=True)
    for key, value in weights(tmp_path / "full").items():
        assert torch.equal(weights(tmp_path / "cut")[key], value), key
    assert resumed["selection"]["last"]["metrics"] == full["selection"]["last"]["metrics"]
    names = sorted(p.name for p in (tmp_path / "full").iterdir() if p.name != ".run.lock")  # the lock stays, free
    assert names == ["checkpoints", "config.json", "history.h5", "summary.json"]
