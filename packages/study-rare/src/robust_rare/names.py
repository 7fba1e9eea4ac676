"""The reference's dataset names, torch-free (the plugin module reads them).

``{clean}{pattern}-{n}-{target}-{seed}``: ``mnistv8-3-0-0`` is MNIST with pattern v8 planted into
3 training images of class 0, chosen (and a random pattern drawn) with seed 0. The reference's
``fashion`` is our ``fashion-mnist``; any registered dataset name works as ``{clean}``.

The reference's datasets (``spurious_ml/datasets``: tf.keras's MNIST, Fashion-MNIST and CIFAR-10)
train on the whole training split, so the planted images are drawn among all 60,000 (50,000):
under such a name our loaders hold nothing out for validation either (``val`` is then the test
split), unless the run asks (``--set dataset.n_val=5000``). With a hold-out, the same seed would
plant the pattern into other images than the study's.
"""

from __future__ import annotations

import re
from typing import Any

# The reference's dataset names: {clean}{pattern}-{n}-{target}-{seed}, e.g. mnistv8-3-0-0.
NAME = re.compile(r"^(?P<base>.+?)(?P<pattern>v\d+)-(?P<n>\d+)-(?P<target>\d+)-(?P<seed>\d+)$")
REFERENCE_DATASETS = {"fashion": "fashion-mnist"}
# Our options that build the reference's training split (no val hold-out) for its three datasets.
WHOLE_TRAINING_SPLIT: dict[str, dict[str, Any]] = {
    "mnist": {"n_val": 0},
    "fashion-mnist": {"n_val": 0},
    "cifar10": {"val_size": 0},
}


def dataset_name(name: str) -> str:
    """Our name of a clean dataset given by its reference name (``fashion`` → ``fashion-mnist``)."""
    return REFERENCE_DATASETS.get(name, name)


def reference_options(dataset: str) -> dict[str, Any]:
    """The dataset options that give the reference's training split (empty for other datasets)."""
    return dict(WHOLE_TRAINING_SPLIT.get(dataset_name(dataset), {}))


def parse_name(name: str) -> tuple[str, dict[str, Any]] | None:
    """``(dataset, options)`` for a reference-style name, or None when it is not one."""
    match = NAME.match(name)
    if match is None:
        return None
    base = dataset_name(match["base"])
    options = {
        **reference_options(base),
        "pattern": match["pattern"],
        "n_spurious": int(match["n"]),
        "target": int(match["target"]),
        "pattern_seed": int(match["seed"]),
    }
    return base, options
