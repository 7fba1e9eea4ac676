"""`robust report --against-paper` on hand-written run directories, with a toy plugin's numbers (moved
from the core's tests with the command; tests/integration checks a real package's number)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from robust_report.aggregate import aggregate, find_summaries
from robust_report.comparison import compare_with_papers, paper_split_options, render_comparison

from robust.api import get_registry
from robust.testing import TOY_PAPER_RESULT, ToyPaperResults

ENTRY = TOY_PAPER_RESULT


# -- robust report --against-paper ----------------------------------------------------------------


def fake_run(
    root: Path,
    name: str,
    *,
    method: str,
    dataset: str,
    seed: int,
    metrics: dict[str, dict[str, float]],
    options: dict | None = None,
    model: str = "mlp",
    train_groups: bool = False,
    val_groups: bool = True,
) -> None:
    """A finished run as robust report reads it: config.json and summary.json, written by hand."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "method": {"name": method}, "dataset": {"name": dataset, **(options or {})}}
    config["model"] = {"name": model}
    (run_dir / "config.json").write_text(json.dumps(config))
    default = "best_val_worst_group" if val_groups else "best_val_avg"
    summary = {
        "method": method,
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "protocol": {"train_group_labels": train_groups, "val_group_labels": val_groups},
        "default_selection": default,
        "selection": {rule: {"metrics": values} for rule, values in metrics.items()},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def toy_runs(root: Path) -> None:
    for seed, (val_rule, oracle) in enumerate([(0.70, 0.78), (0.74, 0.80)]):
        fake_run(
            root,
            f"toy-1pct-{seed}",
            method="toy",
            dataset="toyset",
            seed=seed,
            options={"conflict_pct": 1.0},
            metrics={
                "best_val_worst_group": {"test/worst_group_acc": val_rule, "test/avg_acc": 0.9},
                "oracle_test": {"test/worst_group_acc": oracle, "test/avg_acc": 0.95},
            },
        )
    # Another conflict percentage: a row of its own, with no paper number.
    fake_run(
        root,
        "toy-5pct-0",
        method="toy",
        dataset="toyset",
        seed=0,
        options={"conflict_pct": 5.0},
        metrics={"best_val_worst_group": {"test/worst_group_acc": 0.9, "test/avg_acc": 0.95}},
    )
    fake_run(
        root,
        "erm-synthetic-0",
        method="erm",
        dataset="synthetic-waterbirds",
        seed=0,
        metrics={"best_val_worst_group": {"test/worst_group_acc": 0.6, "test/avg_acc": 0.85}},
    )


def test_comparison_records(tmp_path, register_plugin):
    toy_runs(tmp_path)
    with register_plugin(ToyPaperResults(), "toy-papers"):
        papers = get_registry().paper_results
        rows = aggregate(find_summaries([tmp_path]), None, split_by=paper_split_options(papers))
        records = compare_with_papers(rows, papers)
    by_variant = {(r["method"], r["variant"]): r for r in records}
    assert set(by_variant) == {("toy", "conflict_pct=1"), ("toy", "conflict_pct=5"), ("erm", "")}
    toy = by_variant["toy", "conflict_pct=1"]
    assert toy["metric"] == "test/worst_group_acc" and toy["n"] == 2
    assert toy["ours"]["mean"] == pytest.approx(0.72)
    assert toy["paper"] == {"value": 0.8, "std": 0.01}
    assert toy["difference"] == pytest.approx(-0.08)
    assert "paper selects by oracle (max test acc), ours by best val worst-group acc" in toy["note"]
    assert "ours under the paper's rule: 79.0 ± 1.0 (-1.0)" in toy["note"]  # ± the s.e. (the default)
    assert toy["ours"]["std"] == pytest.approx(0.02 * 2**0.5) and toy["ours"]["se"] == pytest.approx(0.02)
    other = by_variant["toy", "conflict_pct=5"]
    assert other["paper"] is None and "no paper number for these dataset options" in other["note"]
    assert "conflict_pct=1" in other["note"]
    assert "synthetic stand-in" in by_variant["erm", ""]["note"]


def test_same_protocol_gives_no_note_and_a_different_model_does(tmp_path, register_plugin):
    toy_runs(tmp_path)
    with register_plugin(ToyPaperResults(), "toy-papers"):
        papers = get_registry().paper_results
        rows = aggregate(find_summaries([tmp_path]), "oracle_test", split_by=paper_split_options(papers))
        (toy,) = [r for r in compare_with_papers(rows, papers) if r["variant"] == "conflict_pct=1"]
        assert toy["selection"] == "oracle_test" and toy["ours"]["mean"] == pytest.approx(0.79)
        assert toy["note"] == ""
        for row in rows:
            row.model = "resnet18"
            row.protocol = {"train_group_labels": True, "val_group_labels": True}
        (toy,) = [r for r in compare_with_papers(rows, papers) if r["variant"] == "conflict_pct=1"]
        assert "paper's model mlp, ours resnet18" in toy["note"]
        assert "paper trains without group labels, ours with" in toy["note"]


def test_cli_against_paper_markdown_and_json(tmp_path, register_plugin):
    from robust.cli import cli

    toy_runs(tmp_path)
    with register_plugin(ToyPaperResults(), "toy-papers"):
        result = CliRunner().invoke(cli, ["report", str(tmp_path), "--against-paper", "--format", "markdown"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("| method | dataset | model | selection | n | metric | ours | paper | Δ (points) |")
        (toy,) = [line for line in lines if "toyset (conflict_pct=1)" in line]
        cells = [cell.strip() for cell in toy.strip("|").split("|")]
        assert cells[5:9] == ["test/worst_group_acc", "72.0 ± 2.0", "80 ± 1", "-8.0"]  # ours ± s.e.
        assert cells[9] == "Toy et al., Table 2"
        assert "paper selects by oracle (max test acc)" in cells[10] and "79.0 ± 1.0" in cells[10]
        assert "ours: mean ± s.e. over seeds" in lines[-1]
        (none,) = [line for line in lines if "toyset (conflict_pct=5)" in line]
        assert [c.strip() for c in none.strip("|").split("|")][7:10] == ["—", "—", "—"]
        (synthetic,) = [line for line in lines if "synthetic-waterbirds" in line]
        assert "| — | — | — |" in synthetic and "no paper number for this dataset" in synthetic

        sd = CliRunner().invoke(
            cli, ["report", str(tmp_path), "--against-paper", "--format", "markdown", "--spread", "sd"]
        )
        (toy,) = [line for line in sd.output.splitlines() if "toyset (conflict_pct=1)" in line]
        assert "| 72.0 ± 2.8 |" in toy and "79.0 ± 1.4" in toy and "mean ± s.d. over seeds" in sd.output

        as_json = CliRunner().invoke(cli, ["report", str(tmp_path), "--against-paper", "--format", "json"])
        records = json.loads(as_json.output)
        assert {r["paper"]["value"] for r in records if r["paper"]} == {0.8}

        table = CliRunner().invoke(cli, ["report", str(tmp_path), "--against-paper"])
        assert table.exit_code == 0 and "against the papers" in table.output and "-8.0" in table.output

        plain = CliRunner().invoke(cli, ["report", str(tmp_path), "--format", "markdown"])
        assert plain.exit_code == 0 and "paper" not in plain.output


def test_render_comparison_csv(tmp_path, register_plugin):
    toy_runs(tmp_path)
    with register_plugin(ToyPaperResults(), "toy-papers"):
        papers = get_registry().paper_results
        rows = aggregate(find_summaries([tmp_path]), None, split_by=paper_split_options(papers))
        text = render_comparison(compare_with_papers(rows, papers), "csv")
    header, *lines = text.splitlines()
    assert header.startswith("method,dataset,variant,model,selection,n,metric,ours_mean,ours_std,ours_se,")
    assert any(
        line.startswith("toy,toyset,conflict_pct=1,mlp,best_val_worst_group,2,test/worst_group_acc") for line in lines
    )
