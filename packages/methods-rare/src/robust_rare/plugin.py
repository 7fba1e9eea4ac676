"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust import hookimpl
from robust_rare.names import parse_name

RARE_PAPER = "Yang, Gupta, Chaudhuri et al. Understanding Rare Spurious Correlations in Neural Networks."


@hookimpl
def register_dataset_transforms(register: Any) -> None:
    register(
        "plant",
        "robust_rare.planting:plant",
        config="robust_rare.planting:PlantOptions",
        description="Plant a spurious pattern (the study's v1/v3/v8, v18-v20, v30) into n training images of one "
        "class, on any image dataset: dataset.pattern, dataset.n_spurious, dataset.target, dataset.pattern_seed.",
        paper=RARE_PAPER,
    )


@hookimpl
def resolve_dataset(name: str) -> tuple[str, dict[str, Any]] | None:
    """The reference's names, ``mnistv8-3-0-0`` = {dataset}{pattern}-{n}-{target}-{seed}."""
    return parse_name(name)


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_rare.commands import rare  # click only, no torch

    cli.add_command(rare)
