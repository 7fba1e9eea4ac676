"""The user-facing items of issue 19 that involve first-party plugins (the core's own are in
packages/core/tests/test_cli_ux.py): datasets flagged downloadable, PruSC's kept fraction, and the
default model of your own CSV data."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from robust.testing import tiny_dataset


@pytest.fixture
def tiny():
    with tiny_dataset():
        yield


def test_downloadable_datasets_are_those_robust_data_download_fetches():
    from robust.registry import get_registry
    from robust_datasets import download

    names = {n for a in download.ARCHIVES.values() for n in (a.name, *a.aliases)}
    flagged = {e.name for e in get_registry().entries("dataset") if e.metadata.get("downloadable")}
    assert flagged == names


def test_prusc_progress_and_final_table_report_the_same_kept_fraction(tmp_path, tiny):
    """At the paper's settings a short pruning keeps every weight: the table said 0.00 % sparsity while
    the progress said kept=0.82 (the Gumbel samples' keep rate). Both now report the fixed mask."""
    from robust.engine import Run
    from robust.resolve import resolve_run_config
    from robust.results import read_history

    sets = ["train.batch_size=32", "num_clusters=2", "pruning_ep=1", "retrain_ep=1"]
    resolved = resolve_run_config("prusc", dataset="tiny", model="mlp", sets=sets, flags={"epochs": 1})
    buffer = io.StringIO()
    Run(resolved, tmp_path / "run", console=Console(file=buffer, width=200, color_system=None)).fit()
    report = json.loads((tmp_path / "run" / "sparsity.json").read_text())["total"]
    history = read_history(tmp_path / "run" / "history.h5")
    kept = history["train/kept"][list(history["phase"]).index("prune")]
    assert kept == pytest.approx(1 - report["sparsity"]), "train/kept is the fixed mask's kept fraction"
    table = buffer.getvalue()
    assert "kept fraction" in table and f"{1 - report['sparsity']:.4f}" in table


def test_csv_data_defaults_to_a_model_that_suits_it(tmp_path):
    from robust.resolve import resolve_run_config

    metadata_csv = tmp_path / "metadata.csv"
    metadata_csv.write_text("image,label,split\na.png,0,train\n")
    dataset = f"csv:{metadata_csv}"
    default = resolve_run_config("erm", dataset=dataset).config
    assert default.model == {"name": "resnet18", "weights": "IMAGENET1K_V1", "small_input_stem": False}
    small = resolve_run_config("erm", dataset=dataset, sets=["dataset.image_size=32"]).config
    assert small.model_name == "cnn"
    offline = resolve_run_config("erm", dataset=dataset, sets=["model.weights=/x/resnet18.pth"]).config
    assert offline.model["weights"] == "/x/resnet18.pth"
    named = resolve_run_config("erm", dataset=dataset, model="resnet50").config
    assert named.model == {"name": "resnet50", "weights": None, "small_input_stem": False}
