"""BiT-S-R50x1, the backbone CFGen fine-tunes: a ResNet-50 v2 with GroupNorm and weight-standardised
convolutions (Kolesnikov et al., Big Transfer), pre-trained on ImageNet-1k ("S").

The architecture and the reader of Google's original ``.npz`` checkpoints come from timm
(``resnetv2_50x1_bit``, ``load_pretrained``): a maintained implementation rather than a copy of
the reference's ``bit_pytorch``. Weights:

* ``BiT-S-R50x1`` (default in the presets): Google's file ``BiT-S-R50x1.npz``, looked up in
  torch hub's checkpoint folder and downloaded there on first use;
* a path to a ``.npz`` file (any BiT-S/M R50x1 release);
* a timm pretrained tag of ``resnetv2_50x1_bit`` (``goog_in21k`` is BiT-M, ImageNet-21k);
* None: from scratch.

BiT expects inputs normalised with mean = std = 0.5; the loader normalises with the dataset's
statistics (ImageNet's for Waterbirds), which fine-tuning absorbs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from robust.api import Classifier, ModelConfig, WeightsError

BIT_S_URL = "https://storage.googleapis.com/bit_models/BiT-S-R50x1.npz"
ARCH = "resnetv2_50x1_bit"


class BiTConfig(ModelConfig):
    """Options of the ``bit-s-r50x1`` model."""

    weights: str | None = Field(
        "BiT-S-R50x1",
        description="BiT-S-R50x1 (Google's ImageNet-1k checkpoint, downloaded into torch hub's cache), a path "
        "to a BiT .npz file, a timm tag of resnetv2_50x1_bit (goog_in21k = BiT-M), or None (from scratch).",
    )
    zero_head: bool = Field(False, description="Initialise the linear head at zero (the reference does on CCT).")


def _timm():
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a dependency of robust-cfgen
        raise WeightsError("The bit-s-r50x1 model needs timm (pip install timm); or choose --model resnet50.") from exc
    return timm


def bit_checkpoint() -> Path:
    """Google's BiT-S-R50x1.npz in torch hub's checkpoint folder, downloaded when missing."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / "BiT-S-R50x1.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(BIT_S_URL, str(path), progress=True)
        except Exception as exc:  # offline, proxy, partial download
            raise WeightsError(
                f"Could not download BiT-S-R50x1 from {BIT_S_URL} ({type(exc).__name__}: {exc}); this machine may "
                f"be offline. Download the file elsewhere and copy it to {path}, or set "
                "`--set model.weights=/path/to/BiT-S-R50x1.npz`."
            ) from exc
    return path


def build_bit_s_r50x1(
    config: BiTConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """timm's ResNet-50x1 v2 without its head as the encoder (2048 pooled features), a linear head."""
    config = BiTConfig.model_validate(config or {})
    timm = _timm()
    weights = config.weights
    tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{ARCH}.*")]
    if weights in tags:
        try:
            net = timm.create_model(f"{ARCH}.{weights}", pretrained=True, num_classes=0, in_chans=input_shape[0])
        except Exception as exc:
            raise WeightsError(
                f"Could not get timm's {ARCH}.{weights} weights ({type(exc).__name__}: {exc}); this machine may be "
                "offline. Use a local .npz file with `--set model.weights=/path/to/file.npz`."
            ) from exc
    else:
        net = timm.create_model(ARCH, pretrained=False, num_classes=0, in_chans=input_shape[0])
        if weights is not None:
            path = bit_checkpoint() if weights == "BiT-S-R50x1" else Path(weights).expanduser()
            if not path.is_file():
                raise WeightsError(
                    f"`model.weights` {weights!r} is neither BiT-S-R50x1, a timm tag of {ARCH} "
                    f"({', '.join(tags)}), nor an existing .npz file. Get Google's file from {BIT_S_URL}."
                )
            try:
                net.load_pretrained(str(path))
            except Exception as exc:
                raise WeightsError(
                    f"{str(path)!r} is not a BiT R50x1 checkpoint that timm can read ({type(exc).__name__}: {exc})."
                ) from exc
    model = Classifier(net, net.num_features, num_classes)
    if config.zero_head:
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return model
