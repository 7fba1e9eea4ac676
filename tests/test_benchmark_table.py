"""The results table's sweep specs (benchmarks/table/*.toml, issue 20 §3): every method of robust's
own packages is in the table, and every run of it resolves (options, presets, budget) without training."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from robust_sweep.sweep import SweepSpec

from robust.plugins import plugin_distribution
from robust.registry import get_registry
from robust.resolve import resolve_run_config

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "benchmarks" / "table").glob("*.toml"))
FIRST_PARTY = set(tomllib.loads((ROOT / "packages/core/src/robust/first_party.toml").read_text("utf-8"))) | {
    "robust-core"
}


def first_party_methods() -> set[str]:
    return {e.name for e in get_registry().entries("method") if plugin_distribution(e.plugin) in FIRST_PARTY}


def test_the_table_names_every_method_of_robusts_packages():
    methods = first_party_methods()
    assert {"erm", "clp", "cfgen", "prusc", "disent", "jtt", "dfr"} <= methods, "the packages are installed"
    tabled = {m for spec in SPECS for m in SweepSpec.from_toml(spec).methods}
    assert methods - tabled == set(), "add the new method to a spec under benchmarks/table/"
    assert {s.stem for s in SPECS} == {"synthetic-waterbirds", "synthetic-cmnist"}


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_every_run_of_the_table_resolves_on_the_calibrated_data(spec_path):
    spec = SweepSpec.from_toml(spec_path)
    assert spec.seeds == [0, 1, 2, 3, 4] and spec.datasets == [spec_path.stem]
    for run in spec.runs():
        if run.seed:
            continue  # the seed changes nothing that resolves
        flags = {**dict(run.flags), "seed": run.seed}
        resolved = resolve_run_config(run.method, dataset=run.dataset, sets=run.all_sets(), flags=flags)
        config, data = resolved.config, resolved.config.dataset
        assert data["version"] == 2, run.name
        assert config.preset is not None, f"{run.name}: no embedded preset for {run.dataset}"
        if run.dataset == "synthetic-waterbirds":
            assert config.train.epochs == 12 and resolved.method_config.schedule == "cosine", run.name
            assert data["scale"] == 1.0 and data["image_size"] == 32, run.name
        else:
            assert config.train.batch_size == 256, run.name


@pytest.mark.slow
def test_the_table_command_runs_sweeps_and_writes_the_markdown_and_figures(tmp_path):
    """benchmarks/table.py end to end, scaled down: two methods, two seeds, one epoch on 5 % of the data."""
    import subprocess
    import sys

    out, figures, markdown = tmp_path / "runs", tmp_path / "figures", tmp_path / "table.md"
    smoke = ["--seeds", "0,1", "--epochs", "1", "--set", "dataset.frac=0.05", "--methods", "erm,jtt"]
    command = [sys.executable, str(ROOT / "benchmarks" / "table.py"), *smoke, "--out", str(out)]
    command += ["--figure-dir", str(figures), "--markdown", str(markdown)]
    subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = markdown.read_text()
    for dataset in ("synthetic-waterbirds", "synthetic-cmnist"):
        assert f"## {dataset}" in text and (out / dataset / "jtt" / dataset / "default" / "seed1").is_dir()
    assert text.count("| erm | ") == 4 and text.count("| jtt | ") == 4, "two rules per dataset"
    assert "- jtt: " in text and "points (s.e. of the difference" in text
    assert len(list(figures.glob("table-*.png"))) == 4
    assert "load before:" in text and "scaled down" in text
    refused = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "table.py"), *smoke], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "does not overwrite BENCHMARKS.md" in refused.stderr
