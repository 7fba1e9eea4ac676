"""Foreground masks from a torchvision semantic-segmentation model (``deeplabv3``, ``deeplabv3-mobilenet``).

Our stand-in for the image-matting model CLP's authors used to cut out the foreground (not
released): torchvision's DeepLabV3 trained on COCO with the 20 Pascal-VOC classes
(``COCO_WITH_VOC_LABELS_V1``). Foreground = every pixel the model does not call background:
images are scaled to [0, 1], normalised with ImageNet's mean and std, resized to the model's
resolution (520 px, torchvision's evaluation size for these weights), segmented, and the
probability of "not background" is resized back to the image and thresholded at 0.5.

Why DeepLabV3 rather than a matting model: it is maintained in torchvision (a dependency we
already have), its weights are one file in torchvision's cache, and VOC's classes (people,
animals, vehicles, furniture...) cover the objects of CIFAR, Waterbirds and COCO-GLT. Objects
outside those classes come back as background: check a few masks (``robust cfgen preview``) on
other data. ``deeplabv3`` (ResNet-50 backbone) is the more accurate; ``deeplabv3-mobilenet``
(MobileNetV3-Large) is cheaper: on the 2-core development VM, 1.42 s against 0.12 s per image at
520 px (11.6x, median of 3 batches of 2, load 0.4-0.8), so masks for CIFAR's 50,000 training
images take about 20 h or 1.7 h there; on a GPU, minutes. Masks are computed once per run at load.

Weights come from torchvision's cache (``$TORCH_HOME/hub/checkpoints``) or from a file named by
``--set dataset.mask_weights=PATH``; nothing is downloaded during a run (clusters are often
offline): when neither has them, a clear error says where to put the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robust.api import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND = 0  # VOC's class 0


class SegmentationMasks:
    """A mask provider: ``provider(images uint8 (N, C, H, W)) -> masks uint8 (N, 1, H, W)`` in {0, 255}.

    ``weights``: a state-dict file (``.pth``) for the architecture, or None for torchvision's cached
    pretrained weights. The model is built on the first call, in eval mode, on the GPU when there is one.
    """

    arch = "deeplabv3_resnet50"
    weights_enum = "DeepLabV3_ResNet50_Weights"

    def __init__(self, weights: str | None = None, size: int = 520, threshold: float = 0.5, batch_size: int = 16):
        self.weights = weights
        self.size = size
        self.threshold = threshold
        self.batch_size = batch_size
        self._model: torch.nn.Module | None = None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- the model --------------------------------------------------------------------------

    def build(self) -> torch.nn.Module:
        from torchvision.models import segmentation

        model = getattr(segmentation, self.arch)(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        state = self._state_dict()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"The mask provider's weights ({self._source()}) do not fit torchvision's {self.arch} with the 21 VOC "
                f"classes ({str(exc).splitlines()[0]}). Give a state dict saved from that architecture with "
                "--set dataset.mask_weights=PATH."
            ) from None
        return model.eval().to(self.device)

    def _state_dict(self) -> dict[str, Any]:
        if self.weights is not None:
            path = Path(self.weights).expanduser()
            if not path.is_file():
                raise DataError(
                    f"dataset.mask_weights={self.weights!r}: no such file. Give the path of a {self.arch} state dict "
                    "(.pth), or leave the option out to use torchvision's cached pretrained weights."
                )
            return _load_state(path)
        from torchvision.models import segmentation

        url = getattr(segmentation, self.weights_enum).COCO_WITH_VOC_LABELS_V1.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if not cached.is_file():
            raise DataError(
                f"The mask provider needs torchvision's {self.arch} weights (COCO_WITH_VOC_LABELS_V1), which are not "
                f"in torchvision's cache ({cached}). On a machine with network access, download {url} to that path "
                '(or run `python -c "import torchvision.models.segmentation as s; '
                f"s.{self.arch}(weights='DEFAULT')\"`), or give the file with --set dataset.mask_weights=PATH."
            )
        return _load_state(cached)

    def _source(self) -> str:
        return self.weights or "torchvision's cache"

    # -- the masks --------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if self._model is None:
            self._model = self.build()
        n, channels, h, w = images.shape
        if channels not in (1, 3):
            raise DataError(f"The mask provider segments grey or RGB images; these have {channels} channels.")
        out = []
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        for start in range(0, n, self.batch_size):
            x = images[start : start + self.batch_size].to(self.device, torch.float32) / 255.0
            x = x.expand(-1, 3, -1, -1) if channels == 1 else x
            x = F.interpolate((x - mean) / std, size=(self.size, self.size), mode="bilinear", align_corners=False)
            probs = self._model(x)["out"].softmax(dim=1)
            foreground = 1.0 - probs[:, BACKGROUND : BACKGROUND + 1]
            foreground = F.interpolate(foreground, size=(h, w), mode="bilinear", align_corners=False)
            out.append(torch.where(foreground > self.threshold, 255, 0).to(torch.uint8).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1, h, w, dtype=torch.uint8)


class MobileNetSegmentationMasks(SegmentationMasks):
    """The same with the MobileNetV3-Large backbone: cheaper, a little less accurate."""

    arch = "deeplabv3_mobilenet_v3_large"
    weights_enum = "DeepLabV3_MobileNet_V3_Large_Weights"


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's to replace
        raise DataError(f"Cannot read the mask provider's weights {str(path)!r} ({exc}).") from None
    if not isinstance(state, dict):
        raise DataError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__}).")
    return state
