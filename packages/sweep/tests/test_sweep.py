"""robust sweep: a TOML grid expanded into stably named runs, run by submitit's local executor, and
launched again after being killed: every run done exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from robust_sweep.sweep import SweepSpec

from robust.datasets import load_dataset
from robust.errors import ConfigError
from robust.results import read_history

SPEC = """
methods = ["erm"]
datasets = ["synthetic-cmnist"]
seeds = [0, 1]
epochs = 3
[set]
"dataset.n_train" = 200
"dataset.n_val" = 40
"dataset.n_test" = 40
"train.num_workers" = 0
[grid]
lr = [0.01, 0.001]
"train.batch_size" = [32, 64]
"""


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_spec_expands_into_stable_names(tmp_path):
    spec = SweepSpec.from_toml(write_spec(tmp_path))
    runs = spec.runs()
    assert len(runs) == 8
    assert runs[0].name == "erm/synthetic-cmnist/lr=0.01,train.batch_size=32/seed0"
    assert sorted(r.name for r in runs) == sorted(r.name for r in SweepSpec.from_toml(write_spec(tmp_path)).runs())
    assert "lr=0.01" in runs[0].all_sets() and "dataset.n_train=200" in runs[0].all_sets()
    per_method = SweepSpec.from_toml(
        write_spec(tmp_path, 'methods = ["erm", "x"]\ndatasets = ["d"]\n[methods_grid.x]\nalpha = [1, 2]\n')
    )
    assert [r.name for r in per_method.runs()] == [
        "erm/d/default/seed0",
        "x/d/alpha=1/seed0",
        "x/d/alpha=2/seed0",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('datasets = ["d"]', "key `methods`: must be a list of strings"),
        ('methods = []\ndatasets = ["d"]', "key `methods`: must be a non-empty list"),
        ('methods = ["erm"]\ndatasets = ["d"]\nbogus = 1', r"key `bogus`: unknown key \['bogus'\]"),
        ('methods = ["erm"]\ndatasets = ["d"]\nseed = [1]', "did you mean seeds"),
        ('methods = ["erm"]\ndatasets = ["d"]\n[grid]\nlr = 0.1', "key `grid.lr`: must be a non-empty list"),
        ("methods = [", "not valid TOML"),
        # issue 18: each of these was an "Unexpected TypeError/AttributeError ... a bug in robust"
        ('methods = ["erm"]\ndatasets = ["d"]\nseeds = 1', "key `seeds`: must be a list of integers"),
        ('methods = ["erm"]\ndatasets = ["d"]\nseeds = [true]', "key `seeds`: must be a list of integers"),
        ('methods = ["erm"]\ndatasets = ["d"]\nseeds = [-1]', "key `seeds`: .* from 0"),
        ('methods = ["erm"]\ndatasets = ["d"]\nseeds = [1, 1]', "key `seeds`: lists a seed twice"),
        ('methods = ["erm"]\ndatasets = ["d"]\nset = [1, 2]', "key `set`: must be a table"),
        ('methods = ["erm"]\ndatasets = ["d"]\ngrid = 5', "key `grid`: must be a table of lists"),
        ('methods = ["erm"]\ndatasets = ["d"]\n[grid]\nlr = [0.1, 0.1]', "key `grid.lr`: lists a value twice"),
        ('methods = ["erm"]\ndatasets = ["d"]\nmethods_grid = 1', "key `methods_grid`: must be a table"),
        ('methods = ["erm"]\ndatasets = ["d"]\n[methods_grid.jtt]\nlr = [1]', "`methods_grid.jtt`: 'jtt' is not"),
        ('methods = ["erm"]\ndatasets = ["d"]\n[methods_grid]\nerm = 3', "`methods_grid.erm`: must be a table"),
        ('methods = ["erm", 3]\ndatasets = ["d"]', "key `methods`: must be a list of strings"),
        ('methods = ["erm"]\ndatasets = ["d", "d"]', "key `datasets`: lists a name twice"),
        ('methods = ["erm"]\ndatasets = ["d"]\nepochs = "3"', "key `epochs`: must be a positive integer"),
        ('methods = ["erm"]\ndatasets = ["d"]\nnproc = true', "key `nproc`: must be a positive integer"),
    ],
)
def test_bad_specs_are_clear_errors(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        SweepSpec.from_toml(path)
    assert str(path) in str(caught.value)  # names the file
    with pytest.raises(ConfigError, match="No sweep spec"):
        SweepSpec.from_toml(tmp_path / "missing.toml")


def test_nearby_grid_values_are_distinct_runs_trained_with_their_exact_value(tmp_path):
    spec = SweepSpec.from_toml(
        write_spec(tmp_path, 'methods = ["erm"]\ndatasets = ["d"]\n[grid]\nlr = [1e-3, 1.0001e-3, 1.000001e-3]\n')
    )
    runs = spec.runs()
    assert [r.name for r in runs] == [
        "erm/d/lr=0.001/seed0",
        "erm/d/lr=0.0010001/seed0",  # {:g} made this and the next one "lr=0.001": one run, never trained
        "erm/d/lr=0.001000001/seed0",
    ]
    from robust.config import parse_set

    assert [parse_set(r.all_sets()[-1])[1] for r in runs] == [1e-3, 1.0001e-3, 1.000001e-3]  # exact, not rounded


def test_run_names_are_unique_and_stay_inside_the_sweep(tmp_path):
    text = """methods = ["erm"]
datasets = ["d", "csv:../../elsewhere/meta.csv"]
[grid]
opt = ["adam", "1", 1, 1.0, true, "true", "a b", "a_b", "a/b", ["x"], [1, 2], "x" ]
"""
    runs = SweepSpec.from_toml(write_spec(tmp_path, text)).runs()
    names = [r.name for r in runs]
    assert len(set(names)) == len(names) == 24
    root = (tmp_path / "sweep").resolve()
    for name in names:
        assert (root / name).resolve().is_relative_to(root) and len(Path(name).parts) == 4
    shown = [r.name.split("/")[2] for r in runs if r.dataset == "d"]  # in the grid's order
    assert shown[:5] == ["opt=adam", shown[1], "opt=1", "opt=1.0", "opt=true"] and shown[10] == "opt=[1,2]"
    assert shown[1].startswith("opt=_1_~") and shown[5].startswith("opt=_true_~")  # strings: quoted, hashed


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def finished(root: Path) -> list[Path]:
    return sorted(root.glob("erm/synthetic-cmnist/*/seed*/summary.json"))


@pytest.mark.slow
def test_a_killed_sweep_launched_again_finishes_every_run_exactly_once(tmp_path):
    load_dataset("synthetic-cmnist", {"n_train": 200, "n_val": 40, "n_test": 40})  # generate once, before the workers
    spec, root = write_spec(tmp_path), tmp_path / "sweep"
    command = [sys.executable, "-m", "robust", "sweep", str(spec), "--out", str(root), "--parallel", "2"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(finished(root)) < 2 and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)  # kill -9 of the launcher only: its workers must die with it
    first.wait()
    try:
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # at once, workers or not
    finally:
        os.killpg(first.pid, signal.SIGKILL) if _group_alive(first.pid) else None
    assert not _group_alive(first.pid), "a worker of the killed launcher outlived it"
    done_before = {p: p.stat().st_mtime_ns for p in finished(root) if p.stat().st_mtime < killed_at}
    assert 2 <= len(done_before) < 8, "the sweep was not interrupted mid-way"
    assert again.returncode == 0, again.stdout + again.stderr  # no finished run reported failed or busy
    assert "failed" not in again.stdout and "busy" not in again.stdout
    summaries = finished(root)
    assert len(summaries) == 8
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was trained again"
    for path in summaries:
        run_dir = path.parent
        history = read_history(run_dir / "history.h5")
        assert history["epoch"].tolist() == [1, 2, 3], f"{run_dir}: evaluations {history['epoch'].tolist()}"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["method"]["lr"] in (0.01, 0.001) and config["train"]["batch_size"] in (32, 64)

    third = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "8 of 8 runs already done" in third.stdout


@pytest.mark.slow
def test_a_sweep_run_over_two_processes(tmp_path):
    """nproc = 2: submitit starts each run as a job of two tasks that train one data-parallel run."""
    from robust_sweep.sweep import launch

    text = (
        SPEC.split("[grid]")[0]
        .replace("seeds = [0, 1]", "seeds = [0]\nnproc = 2")
        .replace("[set]", '[set]\ndevice = "cpu"')
    )

    spec = SweepSpec.from_toml(write_spec(tmp_path, text))
    assert spec.nproc == 2
    outcomes = launch(spec, tmp_path / "sweep", parallel=1, progress=lambda _: None)
    assert list(outcomes.values()) == ["trained"]
    summary = json.loads(finished(tmp_path / "sweep")[0].read_text())
    assert summary["train"]["processes"] == 2


def test_a_worker_dies_with_its_launcher(tmp_path):
    from robust_sweep.sweep import process_start

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    watch = (
        "import sys, time; from robust_sweep.sweep import watch_launcher; "
        f"watch_launcher({launcher.pid}, {process_start(launcher.pid)!r}, interval=0.05); "
        "print('watching', flush=True); time.sleep(120)"
    )
    worker = subprocess.Popen([sys.executable, "-c", watch], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "watching"
        time.sleep(0.3)
        assert worker.poll() is None  # alive while the launcher is
        os.kill(launcher.pid, signal.SIGKILL)  # left a zombie until reaped: that counts as dead too
        assert worker.wait(timeout=20) == -signal.SIGKILL
    finally:
        for process in (launcher, worker):
            process.kill()
            process.wait()


def test_a_relaunch_waits_for_the_previous_writer_then_skips_what_it_finished(tmp_path):
    from robust_sweep.sweep import wait_for_writer

    from robust.errors import RunDirError
    from robust.runlock import RunLock

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from robust.runlock import RunLock; "
         f"lock = RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(float(sys.argv[1]))", "1.5"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"pid {holder.pid}"):
            wait_for_writer(run_dir, timeout=0.3)
        started = time.monotonic()
        wait_for_writer(run_dir, timeout=30)  # returns once the holder is gone
        assert holder.wait(timeout=10) == 0 and time.monotonic() - started < 30
        RunLock(run_dir).acquire().release()
    finally:
        holder.kill()
        holder.wait()
