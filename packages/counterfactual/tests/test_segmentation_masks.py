"""The DeepLabV3 mask provider, offline: random weights saved as a state dict stand in for
torchvision's pretrained ones (the arithmetic around the model is what is tested)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from robust_counterfactual.mask_options import MaskProviderOptions
from robust_counterfactual.masks import get_mask_provider, with_provider_masks
from robust_counterfactual.segmentation_masks import MobileNetSegmentationMasks, SegmentationMasks

from robust.errors import DataError


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path_factory.mktemp("weights") / "deeplab.pth"
    torch.save(model.state_dict(), path)
    return path


def images(n=3, c=3, h=24, w=40, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_masks_have_the_images_size_dtype_and_values_and_are_deterministic(random_weights):
    provider = MobileNetSegmentationMasks(weights=str(random_weights), size=64)
    x = images()
    masks = provider(x)
    assert masks.shape == (3, 1, 24, 40) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 255}
    assert torch.equal(masks, provider(x))  # the same on a second call
    again = MobileNetSegmentationMasks(weights=str(random_weights), size=64)
    assert torch.equal(masks, again(x))  # and from a fresh model
    grey = provider(images(c=1, h=32, w=32))
    assert grey.shape == (3, 1, 32, 32)


def test_foreground_is_not_background_resized_back_to_the_image(monkeypatch, random_weights):
    """A model that calls the left half background and the right half a bird: the mask is the right half."""
    provider = MobileNetSegmentationMasks(weights=str(random_weights), size=16)

    class HalfBird(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 21, *x.shape[2:])
            logits[:, 0, :, : x.shape[3] // 2] = 10.0  # background on the left
            logits[:, 3, :, x.shape[3] // 2 :] = 10.0  # VOC class 3 (bird) on the right
            return {"out": logits}

    monkeypatch.setattr(provider, "build", lambda: HalfBird())
    masks = provider(images(n=2, h=10, w=20))
    assert masks.shape == (2, 1, 10, 20)
    assert (masks[:, :, :, :9] == 0).all() and (masks[:, :, :, 11:] == 255).all()


def test_missing_weights_name_the_cache_and_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(DataError, match="not in torchvision's cache") as caught:
        SegmentationMasks()(images())
    assert "dataset.mask_weights=PATH" in str(caught.value) and str(tmp_path / "torch-home") in str(caught.value)
    with pytest.raises(DataError, match="no such file"):
        SegmentationMasks(weights=str(tmp_path / "absent.pth"))(images())


def test_weights_of_another_architecture_are_refused(random_weights):
    with pytest.raises(DataError, match="do not fit torchvision's deeplabv3_resnet50"):
        SegmentationMasks(weights=str(random_weights))(images())


def test_registered_providers_and_the_weights_option(random_weights):
    provider = get_mask_provider("deeplabv3-mobilenet", str(random_weights))
    assert isinstance(provider, MobileNetSegmentationMasks) and provider.weights == str(random_weights)
    assert isinstance(get_mask_provider("deeplabv3"), SegmentationMasks)
    with pytest.raises(ValueError, match=r"give dataset\.mask_provider too"):
        MaskProviderOptions(mask_weights="w.pth")


def test_a_split_gets_the_providers_masks(random_weights):
    from robust.data import ArraySplit

    split = ArraySplit(labels=torch.zeros(4, dtype=torch.long), images=images(n=4, h=16, w=16))
    provider = MobileNetSegmentationMasks(weights=str(random_weights), size=32)
    masked = with_provider_masks(split, provider, "deeplabv3-mobilenet")
    assert masked.masks is not None and masked.masks.shape == (4, 1, 16, 16)
    assert torch.equal(masked.masks, provider(split.images))
