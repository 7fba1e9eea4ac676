"""robust discover writes only its declared files into a run directory and never over the run's own
(--out RUN/summary.csv would have replaced summary.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robust.cli import cli
from robust.results import owner_of
from robust.testing import TinyDatasetPlugin, tiny_run


def files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def discover(*args: str):
    return CliRunner().invoke(cli, ["discover", *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


@pytest.fixture
def run(tmp_path) -> Path:
    tiny_run("erm", tmp_path / "run", sets=["lr=0.05"])
    return tmp_path / "run"


def test_discover_writes_only_its_declared_names(run):
    written = files(run)
    before = {name: (run / name).read_bytes() for name in written}
    result = discover("--from", str(run), "--restarts", "1")
    assert result.exit_code == 0, result.output
    added = files(run) - written
    assert added == {"groups.csv", "groups.json"}
    assert {owner_of(name) for name in added} == {"robust discover"}
    assert all((run / name).read_bytes() == content for name, content in before.items()), "run's files untouched"


@pytest.mark.parametrize("out", ["summary.csv", "config.csv", "history.h5", "checkpoints/last.pt", "clusters.csv"])
def test_discover_refuses_to_write_over_the_runs_files(run, out):
    before = {name: (run / name).read_bytes() for name in files(run)}
    result = CliRunner().invoke(cli, ["discover", "--from", str(run), "--out", str(run / out), "--restarts", "1"])
    assert result.exit_code == 2, result.output
    assert "belongs to robust run" in result.output and "Choose another file name" in result.output
    assert files(run) == set(before) and all((run / n).read_bytes() == c for n, c in before.items())


def test_discover_may_use_another_name_in_the_run_directory(run):
    assert discover("--from", str(run), "--out", str(run / "mine.csv"), "--restarts", "1").exit_code == 0
    assert {"mine.csv", "mine.json"} <= files(run)
    json.loads((run / "summary.json").read_text())  # still the run's
