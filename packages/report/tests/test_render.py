"""What `robust report` prints: the terminal table at 80 columns and wide, Markdown, CSV and JSON; the
spread (s.e. by default, or s.d.) named in every caption, the group labels each row used and its wall
time per run."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pytest
from rich.console import Console
from robust_report.aggregate import DEFAULT_METRICS, Row, group_label_use, stats
from robust_report.render import duration, render


def rendered(renderable: Any, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=True).print(renderable)
    return buffer.getvalue()


def _report_rows():
    rows = []
    cells = [
        ("groupdro", "synthetic-waterbirds", "resnet50", "", True, [30.0, 40.0, 50.0]),
        ("erm", "cmnist", "mlp", "conflict_pct=0.5", False, [600.0, 700.0, 800.0]),
        ("cvar_dro", "celeba", "resnet50", "train groups withheld", False, [9000.0, 9000.0, 9000.0]),
    ]
    for i, (method, dataset, model, variant, train_groups, walls) in enumerate(cells):
        row = Row(method, dataset, model, "best_val_worst_group", variant=variant, seeds=[0, 1, 2])
        row.protocol = {"train_group_labels": train_groups, "val_group_labels": True}
        row.wall_times = walls
        for j, metric in enumerate(DEFAULT_METRICS):
            row.values[metric] = [0.5 + 0.01 * (i + j), 0.7 + 0.02 * j, 0.9 - 0.03 * i]
        rows.append(row)
    return rows, list(DEFAULT_METRICS)


def test_report_reads_at_80_columns():
    rows, metrics = _report_rows()
    text = rendered(render(rows, metrics, "table"), 80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in text, "nothing cut"
    for row in rows:
        assert row.method in text and f"({row.model})" in text
        assert row.dataset in text, f"{row.dataset} whole, not cut or folded"
        for metric in metrics:
            found = row.stats(metric)
            assert f"{100 * found.mean:.1f}" in text and f"±{100 * found.se:.1f}" in text, (row.method, metric)
    assert "worst-group" in text  # the short headers are spelled out
    assert "mean ± s.e. over seeds" in " ".join(text.split())
    assert "yes/yes" in text and "no/yes" in text  # group labels used: train / val
    assert "40s" in text and "11.7m" in text and "2.5h" in text  # mean wall time per run, compact
    wide = rendered(render(rows, metrics, "table"), 200)
    found = rows[0].stats("test/avg_acc")
    assert (
        f"{100 * found.mean:.1f} ±{100 * found.se:.1f}" in wide and max(len(line) for line in wide.splitlines()) <= 200
    )
    assert "40 s" in wide and "11.7 min" in wide and "2.5 h" in wide


def test_the_spread_is_the_standard_error_or_the_deviation_and_every_rendering_says_which():
    rows, metrics = _report_rows()
    found = rows[1].stats("test/avg_acc")
    assert found.se == pytest.approx(found.std / math.sqrt(3))
    for spread, name, value in (("se", "s.e.", found.se), ("sd", "s.d.", found.std)):
        table = " ".join(rendered(render(rows, metrics, "table", spread), 200).split())
        assert f"mean ± {name} over seeds" in table and f"{100 * found.mean:.1f} ±{100 * value:.1f}" in table
        markdown = render(rows, metrics, "markdown", spread)
        assert f"mean ± {name} over seeds" in markdown and f"| {100 * found.mean:.1f} ± {100 * value:.1f} |" in markdown
    erm = next(line for line in rendered(render(rows, metrics, "table"), 200).splitlines() if " erm " in line)
    assert f"±{100 * found.std:.1f}" not in erm  # one spread, never both


def test_markdown_names_the_group_labels_and_wall_time_of_each_row():
    rows, metrics = _report_rows()
    lines = render(rows, metrics[:2], "markdown").splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:7] == ["method", "dataset", "model", "selection", "n", "train/val groups", "wall time"]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:5]}
    assert cells["groupdro"][5:7] == ["yes/yes", "40 s"]
    assert cells["erm"][5:7] == ["no/yes", "11.7 min"]
    assert cells["cvar_dro"][1] == "celeba (train groups withheld)"
    assert "selection: best val worst-group acc" in lines[-1] and "wall time: mean per run" in lines[-1]


def test_csv_and_json_carry_the_deviation_and_the_standard_error():
    rows, metrics = _report_rows()
    table = list(csv.DictReader(io.StringIO(render(rows, metrics, "csv", "sd"))))
    erm = next(r for r in table if r["method"] == "erm")
    found = rows[1].stats("test/worst_group_acc")
    assert float(erm["test/worst_group_acc_std"]) == pytest.approx(found.std, abs=1e-6)
    assert float(erm["test/worst_group_acc_se"]) == pytest.approx(found.se, abs=1e-6)
    assert (erm["train_group_labels"], erm["val_group_labels"], float(erm["wall_time_s"])) == ("false", "true", 700.0)
    data = {r["method"]: r for r in json.loads(render(rows, metrics, "json"))}
    assert data["erm"]["metrics"]["test/worst_group_acc"] == pytest.approx(
        {"mean": found.mean, "std": found.std, "se": found.se, "n": 3}
    )
    assert data["groupdro"]["group_labels"] == {"train": True, "val": True}
    assert data["cvar_dro"]["wall_time_s"]["mean"] == 9000.0


def test_one_seed_has_no_spread_and_runs_without_a_wall_time_show_a_dash():
    row = Row("erm", "d", "m", "last", seeds=[0], values={"test/avg_acc": [0.5]})
    assert stats([0.5]).se == 0.0 and duration(row.wall_time()) == "-"
    markdown = render([row], ["test/avg_acc"], "markdown")
    assert "| ?/? | - | 50.0 |" in markdown  # an old summary.json without protocol or wall time


@pytest.mark.parametrize(
    ("protocol", "selection", "candidates", "expected"),
    [
        ({"train_group_labels": False, "val_group_labels": True}, "best_val_worst_group", 1, (False, True)),
        ({"train_group_labels": False, "val_group_labels": True}, "best_val_avg", 1, (False, False)),
        ({"train_group_labels": False, "val_group_labels": True}, "best_val_avg", 2, (False, True)),
        ({"train_group_labels": True, "val_group_labels": True}, "oracle_test", 1, (True, True)),
        ({"train_group_labels": False, "val_group_labels": False}, "best_val_worst_class", 1, (False, False)),
        ({}, "last", 1, (None, None)),
    ],
)
def test_group_label_use(protocol, selection, candidates, expected):
    """Val groups count as used when known and read: by the rule, the hyperparameter choice, the method."""
    row = Row("m", "d", "x", selection, protocol=protocol, candidates=candidates)
    row.selected_by = "val/worst_group_acc" if protocol.get("val_group_labels") else "val/avg_acc"
    assert group_label_use(row) == expected
