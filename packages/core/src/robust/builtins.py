"""The core's own plugin: ERM, Group DRO, the base models, the loss, the augmentations and `frac`, registered through the same hooks
as any third-party plugin (as pytest registers its built-ins). Torch-free: references only.
"""

from __future__ import annotations

from robust.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register(
        "erm",
        "robust.erm:ERM",
        config="robust.erm:ERMConfig",
        description="Empirical risk minimisation: the reference every method is compared with.",
    )
    register(
        "groupdro",
        "robust.groupdro:GroupDRO",
        config="robust.groupdro:GroupDROConfig",
        description="Group DRO: minimises the worst group's loss with online group weights; needs group labels "
        "(annotated, or inferred by `robust discover`).",
    )


@hookimpl
def register_models(register):
    register(
        "mlp",
        "robust.models.mlp:build_mlp",
        config="robust.models.mlp:MLPConfig",
        description="Multi-layer perceptron on flattened inputs (LfF's 3x100 by default).",
    )
    register(
        "cnn",
        "robust.models.cnn:build_cnn",
        config="robust.models.cnn:CNNConfig",
        description="A small 4-block convolutional network for quick experiments.",
    )
    register(
        "resnet20",
        "robust.models.resnet_cifar:build_resnet20",
        config="robust.models.resnet_cifar:CifarResNetConfig",
        description="CIFAR ResNet-20 (He et al. 2016, 3 stages of 3 basic blocks).",
    )
    register(
        "resnet32",
        "robust.models.resnet_cifar:build_resnet32",
        config="robust.models.resnet_cifar:CifarResNetConfig",
        description="CIFAR ResNet-32 (3 stages of 5 basic blocks), the Meta-Weight-Net backbone.",
    )
    register(
        "resnet18",
        "robust.models.torchvision_resnet:build_resnet18",
        config="robust.models.torchvision_resnet:TorchvisionResNetConfig",
        description="torchvision ResNet-18, from scratch or with ImageNet weights.",
    )
    register(
        "resnet50",
        "robust.models.torchvision_resnet:build_resnet50",
        config="robust.models.torchvision_resnet:TorchvisionResNetConfig",
        description="torchvision ResNet-50, from scratch or with ImageNet weights.",
    )


@hookimpl
def register_losses(register):
    register(
        "ce",
        "robust.losses:cross_entropy",
        config="robust.losses:CrossEntropyConfig",
        description="Cross-entropy per sample (optional label smoothing).",
    )


_AUGMENTATIONS = {
    "none": ("no_augmentation", "No augmentation."),
    "flip": ("flip", "A random half of the batch mirrored left-right."),
    "crop_flip": ("crop_flip", "Zero-padded random crop (pad = an eighth of the side, or the dataset's), then flip."),
    "crop_flip_reflect": (
        "crop_flip_reflect",
        "The same with a mirrored border (torchvision's padding_mode='reflect').",
    ),
}


@hookimpl
def register_augmentations(register):
    for name, (function, description) in _AUGMENTATIONS.items():
        register(name, f"robust.augment:{function}", description=description)


@hookimpl
def register_dataset_transforms(register):
    register(
        "frac",
        "robust.fraction:keep_fraction",
        config="robust.fraction:FractionOptions",
        order=0,
        description="Keep a stratified fraction of every split (dataset.frac), drawn with dataset.protocol_seed.",
    )
