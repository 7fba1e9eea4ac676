"""Every file a command writes into a run directory has a name no other command uses, and no command
writes over another's file (robust discover --out RUN/summary.csv would have replaced summary.json:
robust-groups' tests run discover)."""

from __future__ import annotations

import fnmatch
import itertools
from pathlib import Path

import pytest

from robust.errors import RunDirError
from robust.results import RUN_FILES, check_output, owner_of

from .test_engine import make_run
from .tiny import TinyPlugin


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


def files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def example(pattern: str) -> str:
    return pattern.replace("*", "x")


def test_declared_names_are_disjoint():
    for (a, names_a), (b, names_b) in itertools.combinations(RUN_FILES.items(), 2):
        for pattern_a, pattern_b in itertools.product(names_a, names_b):
            assert not fnmatch.fnmatchcase(example(pattern_a), pattern_b), (a, pattern_a, b, pattern_b)
            assert not fnmatch.fnmatchcase(example(pattern_b), pattern_a), (a, pattern_a, b, pattern_b)
    for command, names in RUN_FILES.items():
        assert all(owner_of(example(name)) == command for name in names)


def test_run_writes_only_its_declared_names(tmp_path):
    run = tmp_path / "run"
    make_run(run, method="two-phase", epochs=1).fit()  # phases, best checkpoints, history, summary
    written = files(run)
    assert {
        "config.json",
        "history.h5",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/phase-warmup.pt",
    } <= written
    assert {owner_of(name) for name in written} == {"robust run"}, written


def test_check_output_outside_run_directories_allows_anything(tmp_path):
    check_output(tmp_path / "summary.json", "robust discover")  # not a run directory: no owner
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"summary\.json in the run directory .* belongs to robust run"):
        check_output(tmp_path / "summary.json", "robust discover")
    check_output(tmp_path / "groups.csv", "robust discover")
