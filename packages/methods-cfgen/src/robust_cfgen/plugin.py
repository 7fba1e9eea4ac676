"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "cfgen",
        "robust_cfgen.cfgen:CFGen",
        config="robust_cfgen.config:CFGenConfig",
        description="CFGen: counterfactual images (foreground box infilled, trained away from the label), factual "
        "images (background replaced, label kept) and an input-gradient penalty outside the foreground.",
        paper="Chang, Adam, Goldenberg. Towards Robust Classification Model by Counterfactual and Invariant Data "
        "Generation. CVPR 2021.",
    )


@hookimpl
def register_models(register: Any) -> None:
    register(
        "bit-s-r50x1",
        "robust_cfgen.bit:build_bit_s_r50x1",
        config="robust_cfgen.bit:BiTConfig",
        description="BiT-S-R50x1 (ResNet-50 v2, GroupNorm + weight standardisation, ImageNet-1k), CFGen's "
        "backbone, via timm.",
    )


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_cfgen.commands import cfgen  # click only, no torch

    cli.add_command(cfgen)


@hookimpl
def register_paper_results(register: Any) -> None:
    """The paper's headline numbers, from paper_results.toml (none yet: the file says why)."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_cfgen")
