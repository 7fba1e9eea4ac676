"""`robust report --figure PATH.png`: a PNG written atomically whose bars and error bars are the table's
means and spreads, one panel per dataset; without matplotlib, one paragraph saying what to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from robust_report.aggregate import aggregate, find_summaries


def fake_run(root: Path, method: str, dataset: str, seed: int, metrics: dict[str, float]) -> None:
    run_dir = root / f"{method}-{dataset}-{seed}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "method": {"name": method}, "dataset": {"name": dataset}, "model": {"name": "mlp"}}
    (run_dir / "config.json").write_text(json.dumps(config))
    summary = {
        "method": method,
        "dataset": dataset,
        "model": "mlp",
        "seed": seed,
        "protocol": {"train_group_labels": method == "groupdro", "val_group_labels": True},
        "default_selection": "best_val_worst_group",
        "selection": {"best_val_worst_group": {"metrics": metrics}},
        "train": {"wall_time_s": 60.0 + seed},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


VALUES = {  # (method, dataset) -> avg, worst-group per seed
    ("erm", "birds"): [(0.90, 0.40), (0.92, 0.50), (0.94, 0.45)],
    ("groupdro", "birds"): [(0.85, 0.70), (0.86, 0.74), (0.87, 0.72)],
    ("erm", "digits"): [(0.60, 0.20), (0.64, 0.30), (0.62, 0.25)],
}


@pytest.fixture
def runs(tmp_path):
    for (method, dataset), seeds in VALUES.items():
        for seed, (avg, worst) in enumerate(seeds):
            fake_run(tmp_path / "runs", method, dataset, seed, {"test/avg_acc": avg, "test/worst_group_acc": worst})
    return tmp_path / "runs"


def invoke(*args: str):
    from robust.cli import cli

    return CliRunner().invoke(cli, ["report", *args])


@pytest.mark.parametrize("spread", ["se", "sd"])
def test_bars_and_error_bars_are_the_means_and_spreads(runs, spread):
    pytest.importorskip("matplotlib")
    from matplotlib.container import BarContainer
    from robust_report.figure import draw

    rows = aggregate(find_summaries([runs]))
    metrics = ["test/avg_acc", "test/worst_group_acc"]
    figure = draw(rows, metrics, spread)
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert set(panels) == {"birds", "digits"}
    assert f"mean ± {'s.e.' if spread == 'se' else 's.d.'} over seeds" in " ".join(figure.get_suptitle().split())
    for row in rows:
        ax = panels[row.dataset]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["test avg", "test worst group"]
        (bars,) = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == row.method]
        expected = [row.stats(m) for m in metrics]
        assert [p.get_height() for p in bars.patches] == pytest.approx([100 * s.mean for s in expected])
        # The error bar of each bar spans mean ± spread.
        segments = bars.errorbar.lines[2][0].get_segments()
        spans = [end for seg in segments for end in (seg[0][1], seg[1][1])]
        assert spans == pytest.approx([100 * (s.mean + sign * s.spread(spread)) for s in expected for sign in (-1, 1)])


def test_the_command_writes_a_png(runs, tmp_path):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    target = tmp_path / "out" / "report.png"
    result = invoke(str(runs), "--figure", str(target), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "| erm | birds |" in result.output  # the table as well
    with image.open(target) as png:
        assert png.format == "PNG" and png.size[0] > 300 and png.size[1] > 200
    assert [p.name for p in target.parent.iterdir()] == ["report.png"]  # no temporary file left


def test_the_figure_must_be_a_png_and_not_another_commands_file(runs, tmp_path):
    result = invoke(str(runs), "--figure", str(tmp_path / "report.pdf"))
    assert result.exit_code == 2 and "ends in .png" in result.output
    run_dir = next(runs.iterdir())
    pytest.importorskip("matplotlib")
    taken = invoke(str(runs), "--figure", str(run_dir / "cfgen-preview.png"))
    assert taken.exit_code != 0 and "belongs to robust cfgen preview" in " ".join(taken.output.split())


def test_without_matplotlib_one_paragraph_says_what_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = invoke(str(runs), "--figure", str(tmp_path / "report.png"))
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("Error:") and "\n\n" not in message
    assert "pip install 'robust-report[figure]'" in message
    assert not (tmp_path / "report.png").exists()
