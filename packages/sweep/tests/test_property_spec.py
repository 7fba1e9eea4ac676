"""Property-based test of the sweep spec parser (issue 18): a clean RobustError (one paragraph,
naming the file) or runs with unique names inside the sweep folder, each given its grid value exactly."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robust_sweep.sweep import SweepSpec

from robust.config import parse_set, toml_literal
from robust.errors import RobustError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# TOML values (no null): what a sweep spec can hold.
TOML_KEY = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
TOML_VALUE = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(st.characters(codec="utf-8"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TOML_KEY, inner, max_size=3),
    max_leaves=6,
)


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
