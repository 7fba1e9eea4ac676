"""The method packages' paper numbers (their paper_results.toml), checked against what the installed
packages register: every method, dataset, dataset option, model and metric they name exists; and
`robust report --against-paper` with a real number (DisEnt's CMNIST row). Needs every package."""

from __future__ import annotations

import tomllib
from importlib import metadata, resources
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from packages.report.tests.test_paper_comparison import fake_run  # robust-report's finished-run writer
from robust.papers import FIELDS, make_result
from robust.registry import get_registry
from robust.selection import RULES

ROOT = Path(__file__).resolve().parents[2]


def method_packages() -> list[str]:
    """The import packages of the installed plugins that register paper results (robust_clp, robust_rare...)."""
    import importlib

    found = set()
    for ep in metadata.entry_points(group="robust"):
        module = ep.value.split(":")[0]
        package = module.split(".")[0]
        is_ours = package.startswith("robust_") and package != "robust_example_method"
        if is_ours and hasattr(importlib.import_module(module), "register_paper_results"):
            found.add(package)
    return sorted(found)


def summary_metric_names() -> set[str]:
    """Every metric name an evaluation writes, from robust.metrics itself (not a copy of the list)."""

    from robust.metrics import accuracy_metrics

    labels = torch.tensor([0, 0, 1, 1])
    names = set(
        accuracy_metrics(
            torch.tensor([0, 1, 1, 1]),
            labels,
            groups=torch.tensor([0, 1, 2, 3]),
            bias=torch.tensor([0, 1, 0, 1]),
            num_classes=2,
            num_groups=4,
            train_group_counts=[1, 1, 1, 1],
        )
    )
    return {n for n in names if not n.startswith(("class_acc_", "group_acc_"))} | {"macro_auc"}


def test_every_method_package_ships_a_valid_paper_results_file():
    from robust.papers import METRIC_NAMES

    assert summary_metric_names() == METRIC_NAMES
    packages = method_packages()
    assert {"robust_clp", "robust_disent", "robust_prusc", "robust_cfgen", "robust_rare"} <= set(packages)
    registry = get_registry()
    methods = set(registry.names("method"))
    datasets = set(registry.names("dataset"))
    models = set(registry.names("model"))
    counts = {}
    for package in packages:
        resource = resources.files(package).joinpath("paper_results.toml")
        assert resource.is_file(), f"{package} has no paper_results.toml"
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
        assert set(data) <= {"defaults", "result"}
        entries = [{**data.get("defaults", {}), **entry} for entry in data.get("result", [])]
        counts[package] = len(entries)
        for entry in entries:
            assert set(entry) <= set(FIELDS)
            result = make_result(package, **entry)  # the validation the hook runs
            assert 0.0 <= result.value <= 1.0 and (result.std is None or 0.0 <= result.std <= 1.0)
            assert result.metric.split("/", 1)[1] in summary_metric_names()
            assert result.selection in (*RULES, "unknown")
            assert result.method in methods and result.dataset in datasets, entry
            assert result.model is None or result.model in models
            assert "Table" in result.source or "table" in result.source, result.source
            config = registry.get("dataset", result.dataset).load_config()
            if config is not None:
                for option in result.dataset_options:
                    assert option in config.model_fields, f"{result.dataset} has no option {option!r}"
        # the plugin registers exactly what its file holds
        assert len([r for r in registry.paper_results if r.plugin == _plugin_of(package)]) == len(entries)
    assert counts["robust_disent"] == 27 and counts["robust_clp"] == 20
    assert counts["robust_prusc"] == counts["robust_cfgen"] == counts["robust_rare"] == 0


def _plugin_of(package: str) -> str:
    return next(ep.name for ep in metadata.entry_points(group="robust") if ep.value.split(".")[0] == package)


def test_pyprojects_ship_the_files_as_package_data():
    for pyproject in sorted(ROOT.glob("packages/methods-*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        package_data = data["tool"]["setuptools"]["package-data"]
        assert any("paper_results.toml" in files for files in package_data.values()), pyproject


def test_known_numbers():
    """A few numbers, as the sources print them (DisEnt Table 1; CLP's tables, error turned into accuracy)."""
    registry = get_registry()

    def one(method, dataset, metric, **options):
        (found,) = [
            r for r in registry.papers(method, dataset) if r.metric == metric and r.matches(method, dataset, options)
        ]
        return found

    disent = one("disent", "cmnist", "test/unbiased_acc", conflict_pct=0.5)
    assert (disent.value, disent.std, disent.selection, disent.model) == (0.6522, 0.0441, "oracle_test", "mlp")
    assert not disent.verified and "Table 1" in disent.source
    assert one("lff", "bffhq", "test/conflicting_acc", conflict_pct=0.5).value == 0.622
    assert one("vanilla", "cifar10c", "test/unbiased_acc", conflict_pct=5).value == 0.3942
    assert one("clp", "waterbirds", "test/worst_group_acc").value == 0.918
    assert one("clp", "cifar10-lt", "test/avg_acc", imb_factor=100.0).value == pytest.approx(1 - 0.1803)
    assert one("clp", "cifar100-noisy", "test/avg_acc", corruption_type="unif", corruption_ratio=0.6).value == 0.6155


def test_cli_against_a_registered_paper_number(tmp_path):
    """The real data end to end: a DisEnt CMNIST 1 % run beside Table 1, under oracle selection."""
    from robust.cli import cli

    for seed, value in enumerate([0.80, 0.82]):
        fake_run(
            tmp_path,
            f"disent-{seed}",
            method="disent",
            dataset="cmnist",
            seed=seed,
            options={"conflict_pct": 1.0, "image_size": 28},
            metrics={
                "best_val_worst_group": {"test/unbiased_acc": value - 0.1, "test/avg_acc": value - 0.1},
                "oracle_test": {"test/unbiased_acc": value, "test/avg_acc": value},
            },
        )
    result = CliRunner().invoke(
        cli, ["report", str(tmp_path), "--against-paper", "--selection", "oracle_test", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if "cmnist (conflict_pct=1)" in line]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[6:9] == ["81.0 ± 1.0", "81.73 ± 2.34", "-0.7"]  # ours ± s.e. (the default), the paper's ± as printed
    assert "Table 1" in cells[9] and cells[10] == "paper number not checked against the paper's text"
