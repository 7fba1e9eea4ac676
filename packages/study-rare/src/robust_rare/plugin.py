"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl
from robust_rare.names import parse_name

RARE_PAPER = "Yang, Chou, Chaudhuri. Understanding Rare Spurious Correlations in Neural Networks."


@hookimpl
def register_batch_transforms(register: Any) -> None:
    register(
        "input_noise",
        "robust_rare.input_noise:add_input_noise",
        config="robust_rare.input_noise:InputNoiseOptions",
        description="Gaussian noise on every training image (train.input_noise = its std in [0, 1] pixel units), "
        "one of the study's mitigations.",
        paper=RARE_PAPER,
    )


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
    register(
        "membership",
        "robust_rare.membership:split_halves",
        config="robust_rare.membership:MembershipOptions",
        description="Keep one of two disjoint halves of the training and test splits (target or shadow model of "
        "membership inference): dataset.membership_half, dataset.membership_seed.",
        paper=RARE_PAPER,
    )


MODELS = {  # name: (factory, config, the reference's name, description)
    "small-mlp": ("small_mlp", "SmallMLPConfig", "MLP", "The study's small MLP: one hidden layer of 256."),
    "mlp-v2": ("mlp_v2", "MLPv2Config", "MLPv2", "The study's MLPv2: two hidden layers of 256."),
    "large-mlp": ("large_mlp", "LargeMLPConfig", "LargeMLP", "The study's LargeMLP: three hidden layers of 256."),
    "large-mlp-v2": ("large_mlp_v2", "LargeMLPv2Config", "LargeMLPv2", "Three hidden layers of 512."),
    "alt-resnet20": (
        "alt_resnet20",
        "CifarResNetConfig",
        "altResNet20Norm02",
        "The study's CIFAR ResNet-20 (option-A shortcuts, Kaiming init).",
    ),
}


@hookimpl
def register_models(register: Any) -> None:
    for name, (factory, config, reference, description) in MODELS.items():
        module = "robust.models.resnet_cifar" if config == "CifarResNetConfig" else "robust_rare.models"
        register(
            name,
            f"robust_rare.models:{factory}",
            config=f"{module}:{config}",
            description=description,
            aliases=(reference,),
        )


@hookimpl
def resolve_dataset(name: str) -> tuple[str, dict[str, Any]] | None:
    """The reference's names, ``mnistv8-3-0-0`` = {dataset}{pattern}-{n}-{target}-{seed}."""
    return parse_name(name)


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_rare.commands import rare  # click only, no torch

    cli.add_command(rare)


@hookimpl
def register_paper_results(register: Any) -> None:
    """None: the study has no number a run could be set beside; paper_results.toml says why."""
    from robust.api import register_from_toml

    register_from_toml(register, "robust_rare")
