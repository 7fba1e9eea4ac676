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

from robust.datasets import load_dataset
from robust.errors import ConfigError
from robust.results import read_history
from robust.sweep import SweepSpec

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
        ('datasets = ["d"]', "non-empty list `methods`"),
        ('methods = ["erm"]\ndatasets = ["d"]\nbogus = 1', "unknown keys"),
        ('methods = ["erm"]\ndatasets = ["d"]\n[grid]\nlr = 0.1', "must be a non-empty list"),
        ("methods = [", "not valid TOML"),
    ],
)
def test_bad_specs_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec.from_toml(write_spec(tmp_path, text))
    with pytest.raises(ConfigError, match="No sweep spec"):
        SweepSpec.from_toml(tmp_path / "missing.toml")


def finished(root: Path) -> list[Path]:
    return sorted(root.glob("erm/synthetic-cmnist/*/seed*/summary.json"))


def test_a_killed_sweep_launched_again_finishes_every_run_exactly_once(tmp_path):
    load_dataset("synthetic-cmnist", {"n_train": 200, "n_val": 40, "n_test": 40})  # generate once, before the workers
    spec, root = write_spec(tmp_path), tmp_path / "sweep"
    command = [sys.executable, "-m", "robust", "sweep", str(spec), "--out", str(root), "--parallel", "2"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(finished(root)) < 2 and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its workers, mid-way
    first.wait()
    done_before = {p: p.stat().st_mtime_ns for p in finished(root)}
    assert 2 <= len(done_before) < 8, "the sweep was not interrupted mid-way"

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(done_before)} of 8 runs already done" in again.stdout
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


def fake_run(root: Path, lr: float, seed: int, val_wg: float, test_wg: float, groups: bool = True) -> None:
    run_dir = root / f"lr{lr}" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "method": {"name": "erm", "lr": lr}, "dataset": {"name": "d"}, "model": {"name": "m"}}
    (run_dir / "config.json").write_text(json.dumps(config))
    metrics = {"val/worst_group_acc": val_wg, "val/avg_acc": 1 - val_wg, "test/worst_group_acc": test_wg}
    rule = "best_val_worst_group" if groups else "best_val_avg"
    summary = {
        "method": "erm",
        "dataset": "d",
        "model": "m",
        "seed": seed,
        "protocol": {"val_group_labels": groups},
        "default_selection": rule,
        "selection": {rule: {"metrics": metrics}},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("groups", [True, False])
def test_report_selects_hyperparameters_by_validation_then_reports_test(tmp_path, groups):
    from robust.report import aggregate, find_summaries, render

    for seed in (0, 1):
        fake_run(tmp_path, 0.1, seed, val_wg=0.6, test_wg=0.50 + seed / 100, groups=groups)
        fake_run(tmp_path, 0.01, seed, val_wg=0.4, test_wg=0.90, groups=groups)
    (row,) = aggregate(find_summaries([tmp_path]))
    # Known val groups: the best val worst-group (lr 0.1); unknown: the best val average (lr 0.01).
    expected_lr, expected_test = (0.1, [0.50, 0.51]) if groups else (0.01, [0.90, 0.90])
    assert row.hyper == f"lr={expected_lr}" and row.candidates == 2
    assert row.selected_by == ("val/worst_group_acc" if groups else "val/avg_acc")
    assert row.values["test/worst_group_acc"] == expected_test and sorted(row.seeds) == [0, 1]
    markdown = render([row], ["test/worst_group_acc"], "markdown")
    assert f"lr={expected_lr} (best of 2 by {row.selected_by})" in markdown


def test_a_sweep_run_over_two_processes(tmp_path):
    """nproc = 2: submitit starts each run as a job of two tasks that train one data-parallel run."""
    from robust.sweep import launch

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
