"""Aggregating run directories: hyperparameters chosen by validation (a sweep's runs), rows kept apart
by label protocol and by data, and each row's wall time and group-label use, from real tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from robust_report.aggregate import Row, aggregate, find_summaries, group_label_use
from robust_report.render import render

from robust.api import ERM, Run, hookimpl, resolve_run_config
from robust.testing import tiny_dataset


class GroupUser(ERM):
    """ERM that declares it trains on group labels (the protocol then gives them)."""

    uses_group_labels = True


class GroupUserPlugin:
    @hookimpl
    def register_methods(self, register):
        register("group-user", GroupUser)


@pytest.fixture
def tiny(register_plugin):
    with tiny_dataset(), register_plugin(GroupUserPlugin(), "report-test-group-user"):
        yield


def run(tmp_path, method: str, **flags):
    flags.setdefault("epochs", 1)
    resolved = resolve_run_config(method, dataset="tiny", sets=["lr=0.05", "train.batch_size=32"], flags=flags)
    return Run(resolved, tmp_path / method, quiet=True).fit()


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


def test_report_keeps_protocols_apart(tmp_path, tiny):
    """Runs that differ in the label protocol are separate rows, not hyperparameter candidates."""
    run(tmp_path / "a", "group-user")
    run(tmp_path / "b", "group-user", val_attr="no")
    rows = aggregate(find_summaries([tmp_path]))
    assert sorted(r.variant for r in rows) == ["", "val groups withheld"]
    assert all(r.candidates == 1 for r in rows)


def test_report_keeps_other_data_apart(tmp_path, tiny):
    """Runs on other data (a dataset option that differs: another CSV file, another conflict ratio)
    are separate rows named by that option, never hyperparameter candidates of one another."""
    for n, lr in ((96, 0.05), (64, 0.05), (64, 0.01)):
        sets = ["train.batch_size=32", f"dataset.n_train={n}", f"lr={lr}"]
        resolved = resolve_run_config("erm", dataset="tiny", sets=sets, flags={"epochs": 1})
        Run(resolved, tmp_path / f"n{n}-lr{lr}", quiet=True).fit()
    rows = {r.variant: r for r in aggregate(find_summaries([tmp_path]))}
    assert set(rows) == {"n_train=96", "n_train=64"}
    assert rows["n_train=64"].candidates == 2 and rows["n_train=96"].candidates == 1
    assert rows["n_train=64"].hyper.startswith("lr=")


def test_rows_carry_the_wall_time_and_the_group_labels_of_their_runs(tmp_path, tiny):
    summaries = [run(tmp_path / f"seed{seed}", "group-user", seed=seed) for seed in (0, 1)]
    (row,) = aggregate(find_summaries([tmp_path]))
    assert sorted(row.wall_times) == sorted(s["train"]["wall_time_s"] for s in summaries)
    assert row.wall_time().n == 2 and row.wall_time().mean > 0
    assert group_label_use(row) == (True, True)


def test_a_method_that_reads_only_val_groups_shows_no_train_and_yes_val_groups():
    """DFR: no training groups, val's read by the method although its selection rule is 'last'."""
    row = Row("dfr", "synthetic-waterbirds", "cnn", "last")
    row.protocol = {"train_group_labels": False, "val_group_labels": True, "val_groups_to_method": True}
    assert group_label_use(row) == (False, True)
    row.protocol["val_groups_to_method"] = False
    assert group_label_use(row) == (False, False)
