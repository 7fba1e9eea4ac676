"""Property: `robust report` over run directories whose summary.json / config.json took random damage
(truncated, bytes flipped, not UTF-8, another JSON value, keys dropped or retyped) either reports, or
fails with one paragraph naming the damaged file; never an unexpected exception (issue 18)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust.cli import cli

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def valid_run(seed: int, lr: float) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {"seed": seed, "method": {"name": "erm", "lr": lr}, "dataset": {"name": "d", "n": 3},
              "model": {"name": "m"}, "train": {"epochs": 2}}  # fmt: skip
    metrics = {"val/worst_group_acc": 0.5, "val/avg_acc": 0.6, "test/worst_group_acc": 0.4, "test/avg_acc": 0.7}
    summary = {"method": "erm", "dataset": "d", "model": "m", "seed": seed,
               "protocol": {"val_group_labels": True}, "default_selection": "best_val_worst_group",
               "selection": {"best_val_worst_group": {"metrics": metrics}, "last": {"metrics": dict(metrics)}},
               "opt_outs": [], "train": {"steps": 10, "wall_time_s": 12.5}}  # fmt: skip
    return summary, config


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += paths_of(child, (*prefix, key))
    return found


@st.composite
def damaged(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """``document`` as JSON bytes after one random kind of damage."""
    text = json.dumps(document).encode()
    kind = draw(st.sampled_from(["truncate", "bytes", "other-json", "drop", "retype", "intact"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "bytes":
        data = bytearray(text)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "other-json":
        return json.dumps(draw(JSON)).encode()
    if kind == "intact":
        return text
    path = draw(st.sampled_from(paths_of(document)))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if kind == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return json.dumps(document).encode()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), which=st.sampled_from(["summary", "config", "both"]), fmt=st.sampled_from(["table", "json", "csv"])
)
def test_report_over_damaged_run_directories(data, which, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        damaged_files = []
        for seed, lr in ((0, 0.1), (0, 0.01), (1, 0.1)):
            run_dir = root / f"lr{lr}" / f"seed{seed}"
            run_dir.mkdir(parents=True)
            summary, config = valid_run(seed, lr)
            for name, document in (("summary", summary), ("config", config)):
                path = run_dir / f"{name}.json"
                if seed == 0 and lr == 0.1 and which in (name, "both"):
                    path.write_bytes(data.draw(damaged(document), label=name))
                    damaged_files.append(str(path))
                else:
                    path.write_text(json.dumps(document))
        result = CliRunner().invoke(cli, ["report", str(root), "--format", fmt])
        if result.exit_code == 0:
            return
        assert result.exit_code == 2, f"{result.output}\n{result.exception!r}"  # a RobustError, not a crash
        message = result.output.strip()
        assert message.startswith("Error: ") and "Unexpected" not in message, message
        assert any(f in " ".join(message.split()) for f in damaged_files), message  # names the damaged file
