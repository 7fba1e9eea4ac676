"""The reference's dataset names, torch-free (the plugin module reads them).

``{clean}{pattern}-{n}-{target}-{seed}``: ``mnistv8-3-0-0`` is MNIST with pattern v8 planted into
3 training images of class 0, chosen (and a random pattern drawn) with seed 0. The reference's
``fashion`` is our ``fashion-mnist``; any registered dataset name works as ``{clean}``.
"""

from __future__ import annotations

import re
from typing import Any

# The reference's dataset names: {clean}{pattern}-{n}-{target}-{seed}, e.g. mnistv8-3-0-0.
NAME = re.compile(r"^(?P<base>.+?)(?P<pattern>v\d+)-(?P<n>\d+)-(?P<target>\d+)-(?P<seed>\d+)$")
REFERENCE_DATASETS = {"fashion": "fashion-mnist"}


def parse_name(name: str) -> tuple[str, dict[str, Any]] | None:
    """``(dataset, plant options)`` for a reference-style name, or None when it is not one."""
    match = NAME.match(name)
    if match is None:
        return None
    base = REFERENCE_DATASETS.get(match["base"], match["base"])
    options = {
        "pattern": match["pattern"],
        "n_spurious": int(match["n"]),
        "target": int(match["target"]),
        "pattern_seed": int(match["seed"]),
    }
    return base, options
