"""Property-based tests of the core's parsers of user input (issue 18): `--set` values, TOML config
files and dataset names (robust-sweep's tests do sweep specs). Property: a clean RobustError (one paragraph; naming the file when
there is one) or a valid result; never another exception."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust.config import parse_set, parse_value, toml_literal
from robust.errors import RobustError
from robust.resolve import resolve_run_config
from robust.testing import registered

from .tiny import TinyPlugin


@pytest.fixture(scope="module", autouse=True)
def tiny():
    """The kit's tiny dataset (module-scoped: hypothesis runs each test many times in one fixture)."""
    with registered(TinyPlugin(), "tiny-test-plugin"):
        yield


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
        resolved = resolve_run_config("erm", dataset="tiny", sets=[item])
    except RobustError as exc:
        single_paragraph(exc)
        return
    assert resolved.config.dataset["name"] == "tiny"


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
            value = draw(st.sampled_from(["tiny", "erm"]) | TOML_VALUE)
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
            resolve_run_config("erm", dataset="tiny" if with_dataset else None, config_file=str(path))
        except RobustError as exc:
            assert str(path) in single_paragraph(exc)


@pytest.mark.parametrize("prefix", ["", "csv:", "tiny"])
@SETTINGS
@given(name=st.text(max_size=20))
def test_dataset_names_resolve_or_fail_cleanly(prefix, name):
    try:
        resolved = resolve_run_config("erm", dataset=prefix + name)
    except RobustError as exc:
        single_paragraph(exc)
        return
    assert resolved.dataset.name
