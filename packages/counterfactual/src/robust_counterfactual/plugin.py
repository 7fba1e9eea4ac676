"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl

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
def register_infills(register: Any) -> None:
    for name, (function, description) in _INFILLS.items():
        register(name, f"robust_counterfactual.infill:{function}", description=description)


@hookimpl
def register_mask_providers(register: Any) -> None:
    register(
        "deeplabv3",
        "robust_counterfactual.segmentation_masks:SegmentationMasks",
        description="Foreground = not background of torchvision's DeepLabV3-ResNet50 (COCO, VOC classes); "
        "weights from torchvision's cache or dataset.mask_weights.",
    )
    register(
        "deeplabv3-mobilenet",
        "robust_counterfactual.segmentation_masks:MobileNetSegmentationMasks",
        description="The same with the MobileNetV3-Large backbone: about 11x cheaper on a CPU.",
    )


@hookimpl
def register_augmentations(register: Any) -> None:
    register(
        "bbox_crop_flip",
        "robust_counterfactual.bbox_crop:bbox_crop_flip",
        description="CFGen's crop: resize to 256/224 and a random crop that keeps part of the foreground box, "
        "then flip.",
    )


@hookimpl
def register_dataset_transforms(register: Any) -> None:
    register(
        "mask_provider",
        "robust_counterfactual.masks:provide_masks",
        config="robust_counterfactual.mask_options:MaskProviderOptions",
        order=20,
        description="Foreground masks of the training split and the meta set from a registered mask provider.",
    )
