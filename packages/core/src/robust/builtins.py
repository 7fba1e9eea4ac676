"""The core's own plugin: ERM, the base models, losses and infills, registered through the same hooks
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


_INFILLS = {
    "mean": ("mean_infill", "Fill with the dataset mean colour (0 in normalised space)."),
    "random": ("random_infill", "Fill with a random colour per image plus Gaussian pixel noise (CFGen)."),
    "shuffle": ("shuffle_infill", "Fill with a random permutation of all values of the batch (CFGen)."),
    "tile": ("tile_infill", "Fill with the longest full-background row or column strip, tiled (CFGen)."),
    "mrand": ("mrand_infill", "Factual: tiled background of a random other-class image in the batch (CFGen)."),
    "fgsm": ("fgsm_infill", "Factual: adversarial background, one FGSM step from a random start (CFGen)."),
    "cagan": ("cagan_infill", "Fill with the dataset's pre-computed CA-GAN counterfactual images (CFGen)."),
}


@hookimpl
def register_infills(register):
    for name, (function, description) in _INFILLS.items():
        register(name, f"robust.infill:{function}", description=description)


@hookimpl
def register_mask_providers(register):
    register(
        "deeplabv3",
        "robust.segmentation_masks:SegmentationMasks",
        description="Foreground = not background of torchvision's DeepLabV3-ResNet50 (COCO, VOC classes); "
        "weights from torchvision's cache or dataset.mask_weights.",
    )
    register(
        "deeplabv3-mobilenet",
        "robust.segmentation_masks:MobileNetSegmentationMasks",
        description="The same with the MobileNetV3-Large backbone: about 11x cheaper on a CPU.",
    )
