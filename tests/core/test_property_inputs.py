"""Property-based tests of every parser of user input (issue 18): `--set` values, TOML config files,
sweep specs and dataset names. Property: a clean RobustError (one paragraph; naming the file when
there is one) or a valid result; never another exception."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robust_sweep.sweep import SweepSpec

from robust.config import parse_set, parse_value, toml_literal
from robust.errors import RobustError
from robust.resolve import resolve_run_config

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# TOML values (no null): what a config file, a sweep spec or a --set literal can hold.
TOML_KEY = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
TOML_VALUE = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(st.characters(codec="utf-8"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TOML_KEY, inner, max_size=3),
    max_leaves=6,
)
KNOWN_KEYS = ["lr", "seed", "momentum", "batch_size", "epochs", "preset", "device", "method.lr", "train.epochs",
              "dataset.n_train", "dataset.name", "model.name", "dataset", "train", "method", "data_root"]  # fmt: skip
SET_KEY = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12)
SET_TEXT = st.text(max_size=30) | TOML_VALUE.map(lambda v: toml_literal(v))


def single_paragraph(exc: RobustError) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Unexpected" not in message
    return message


def same(a: Any, b: Any) -> bool:
    """Equal as TOML values: same types all the way down, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@SETTINGS
@given(TOML_VALUE)
def test_toml_literal_reads_back_exactly(value):
    """What a sweep hands its runs: the exact grid value, never a rounded one."""
    assert same(parse_value(toml_literal(value)), value)


@SETTINGS
@given(key=SET_KEY, text=SET_TEXT)
def test_set_values_resolve_or_fail_cleanly(key, text):
    item = f"{key}={text}"
    try:
        path, _ = parse_set(item)
        assert path and all(path)
        resolved = resolve_run_config("erm", dataset="synthetic-cmnist", sets=[item])
    except RobustError as exc:
        single_paragraph(exc)
        return
    assert resolved.config.dataset["name"] == "synthetic-cmnist"


@st.composite
def toml_document(draw: st.DrawFn, keys: list[str]) -> str:
    """A TOML file: known or random top-level keys and [tables], inline values of any type; or raw junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(keys) | TOML_KEY)
        lines.append(f"{toml_literal(key)} = {toml_literal(draw(TOML_VALUE))}")
    for section in draw(st.lists(st.sampled_from(["method", "dataset", "model", "train", "set", "grid"]), max_size=2,
                                 unique=True)):  # fmt: skip
        lines.append(f"[{section}]")
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from(["name", "lr", "n_train", "epochs", "image_size", "seed"]) | TOML_KEY)
            value = draw(st.sampled_from(["synthetic-cmnist", "erm"]) | TOML_VALUE)
            lines.append(f"{toml_literal(key)} = {toml_literal(value)}")
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=toml_document(["seed", "preset", "device", "data_root", "dataset", "train", "method", "val_attr"]),
       with_dataset=st.booleans())  # fmt: skip
def test_toml_configs_resolve_or_fail_naming_the_file(text, with_dataset):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.toml"
        path.write_text(text, encoding="utf-8")
        try:
            resolve_run_config("erm", dataset="synthetic-cmnist" if with_dataset else None, config_file=str(path))
        except RobustError as exc:
            assert str(path) in single_paragraph(exc)


NAMES = st.sampled_from(["erm", "jtt", "d", "csv:../x.csv", "a b", "..", "x/y", "é"]) | st.text(min_size=1, max_size=6)
NEARBY = st.floats(1e-4, 1e-2).flatmap(lambda x: st.sampled_from([x, x * (1 + 1e-9), x * (1 + 1e-6), round(x, 4)]))


GRID_KEY = st.sampled_from(["lr", "train.batch_size", "q"]) | TOML_KEY


@st.composite
def sweep_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A sweep spec, usually well formed (unique names, grids of distinct values, nearby floats), with
    any key then possibly replaced by a random TOML value or a random extra key."""
    grid_value = NEARBY | TOML_VALUE
    spec: dict[str, Any] = {
        "methods": draw(st.lists(NAMES, min_size=1, max_size=2, unique=True)),
        "datasets": draw(st.lists(NAMES, min_size=1, max_size=2, unique=True)),
        "seeds": draw(st.lists(st.integers(0, 5), min_size=1, max_size=2, unique=True)),
        "set": draw(st.dictionaries(st.sampled_from(["lr", "dataset.n", "x y"]) | TOML_KEY, TOML_VALUE, max_size=2)),
        "grid": draw(st.dictionaries(GRID_KEY, st.lists(grid_value, min_size=1, max_size=3), max_size=2)),
    }
    if draw(st.booleans()):
        spec["methods_grid"] = {spec["methods"][0]: {"alpha": draw(st.lists(grid_value, min_size=1, max_size=3))}}
    for key in draw(st.lists(st.sampled_from([*spec, "epochs", "steps", "nproc", "name", "bogus"]), max_size=2)):
        spec[key] = draw(TOML_VALUE)
    return spec


@SETTINGS
@given(spec=sweep_spec())
def test_sweep_specs_expand_into_unique_exact_runs_or_fail_naming_the_file(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.toml"
        path.write_text("".join(f"{toml_literal(k)} = {toml_literal(v)}\n" for k, v in spec.items()), encoding="utf-8")
        try:
            parsed = SweepSpec.from_toml(path)
        except RobustError as exc:
            assert str(path) in single_paragraph(exc)
            return
        runs = parsed.runs()
        assert len({r.name for r in runs}) == len(runs)  # no two runs share a directory
        root = (Path(tmp) / "out").resolve()
        for run in runs:
            assert (root / run.name).resolve().is_relative_to(root)  # and none leaves the sweep folder
            for option, value in run.hyper:  # each run is given its grid value exactly
                assert any(same(parse_set(s)[1], value) for s in run.all_sets() if s.startswith(f"{option}="))


@pytest.mark.parametrize("prefix", ["", "csv:", "synthetic-"])
@SETTINGS
@given(name=st.text(max_size=20))
def test_dataset_names_resolve_or_fail_cleanly(prefix, name):
    try:
        resolved = resolve_run_config("erm", dataset=prefix + name)
    except RobustError as exc:
        single_paragraph(exc)
        return
    assert resolved.dataset.name
