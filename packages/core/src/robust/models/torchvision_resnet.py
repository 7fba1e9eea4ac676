"""torchvision ResNet-18/50 as ``Classifier`` encoders, from scratch or from pretrained weights.

Weights come from torchvision's enum (downloaded once into the torch hub cache) or from a
local ``.pth`` state dict, so that offline machines can use a file fetched elsewhere.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.hub
import torchvision
from pydantic import Field
from torch import Tensor, nn

from robust.config import ModelConfig
from robust.errors import RobustError
from robust.models.classifier import Classifier


class WeightsError(RobustError):
    """Pretrained weights cannot be found, downloaded or loaded into the model."""


class TorchvisionResNetConfig(ModelConfig):
    """Options of the ``resnet18`` and ``resnet50`` models."""

    weights: str | None = Field(
        None,
        description=(
            "None = from scratch; a torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT), "
            "downloaded via torch hub; or a path to a local .pth state dict (fc.* keys optional)."
        ),
    )
    small_input_stem: bool = Field(
        False,
        description=(
            "Replace the 7x7 stride-2 stem conv by a 3x3 stride-1 conv and drop the max-pool, as CIFAR "
            "ResNet-18 variants do (a pretrained 7x7 stem is then not used)."
        ),
    )


ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], type]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
}


def build_resnet18(
    config: TorchvisionResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """torchvision ResNet-18 encoder (512 features) and a linear head."""
    return build_torchvision_resnet("resnet18", config, num_classes, input_shape)


def build_resnet50(
    config: TorchvisionResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """torchvision ResNet-50 encoder (2048 features) and a linear head."""
    return build_torchvision_resnet("resnet50", config, num_classes, input_shape)


def build_torchvision_resnet(
    arch: str, config: TorchvisionResNetConfig | dict | None, num_classes: int, input_shape: tuple[int, int, int]
) -> Classifier:
    """The torchvision network with ``fc`` replaced by identity is the encoder."""
    config = TorchvisionResNetConfig.model_validate(config or {})
    factory, weights_enum = ARCHITECTURES[arch]
    net = factory(weights=None)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    in_channels = input_shape[0]
    stem_replaced = config.small_input_stem or in_channels != 3
    if stem_replaced:
        kernel, stride, padding = (3, 1, 1) if config.small_input_stem else (7, 2, 3)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel, stride=stride, padding=padding, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if config.small_input_stem:
        net.maxpool = nn.Identity()
    if config.weights is not None:
        state = resolve_weights(arch, weights_enum, config.weights)
        load_encoder_state(net, state, arch, config.weights, stem_replaced)
    return Classifier(net, feature_dim, num_classes)


def resolve_weights(arch: str, weights_enum: type, spec: str) -> dict[str, Tensor]:
    """A state dict from a torchvision weights name or from a local file."""
    names = list(weights_enum.__members__)
    if spec.strip().upper() in names:
        return download_weights(arch, weights_enum[spec.strip().upper()])
    path = Path(spec).expanduser()
    if path.is_file():
        return read_weights_file(path)
    if looks_like_path(spec):
        raise WeightsError(
            f"The weights file {str(path)!r} given by `model.weights` does not exist (or is not a file). "
            f"Set `--set model.weights=` to an existing .pth state dict of torchvision {arch}, or to one of "
            f"the torchvision names {', '.join(names)}."
        )
    raise WeightsError(
        f"Unknown weights {spec!r} for {arch} in `model.weights`. Valid torchvision names: {', '.join(names)}; "
        "or give a path to a local .pth state dict (no such file exists here), or leave it unset to train "
        "from scratch."
    )


def looks_like_path(spec: str) -> bool:
    """A separator, ``~`` or a suffix: the user meant a file, so say it is missing."""
    return "/" in spec or "\\" in spec or spec.startswith("~") or "." in spec


def download_weights(arch: str, weights: Any) -> dict[str, Tensor]:
    """Fetch through torch hub (a no-op when cached); offline failures become a WeightsError."""
    url = weights.url
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as exc:  # offline, proxy, truncated file, bad hash: all end the same way
        raise WeightsError(
            f"Could not get the {arch} weights {type(weights).__name__}.{weights.name} from {url} "
            f"({type(exc).__name__}: {exc}). torch hub caches them at {cache}; this machine may be offline. "
            "Download the file elsewhere and either copy it to that path or set "
            "`--set model.weights=/path/to/file.pth`."
        ) from exc


def read_weights_file(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Cannot read the weights file {str(path)!r} given by `model.weights` ({type(exc).__name__}: {exc}). "
            "Expected a state dict saved with `torch.save(model.state_dict(), path)`."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(
            f"The weights file {str(path)!r} given by `model.weights` holds a {type(state).__name__}, not a "
            "state dict of tensors. Save it with `torch.save(model.state_dict(), path)`."
        )
    return state


def load_encoder_state(net: nn.Module, state: dict[str, Tensor], arch: str, spec: str, stem_replaced: bool) -> None:
    """Load strictly, except for ``fc.*`` (the head is ours) and a stem we deliberately replaced."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    target = net.conv1.weight
    source = state.get("conv1.weight")
    if stem_replaced and source is not None and source.shape != target.shape:
        if source.shape[2:] == target.shape[2:] and target.shape[1] == 1:
            state["conv1.weight"] = source.sum(dim=1, keepdim=True)  # grayscale: sum the RGB filters
        else:
            state["conv1.weight"] = target.detach().clone()  # keep the fresh initialisation
            warnings.warn(
                f"Pretrained conv1 of shape {tuple(source.shape)} does not fit the replaced stem "
                f"{tuple(target.shape)}; the stem is trained from scratch.",
                stacklevel=3,
            )
    expected = net.state_dict()
    # Old torchvision files lack BatchNorm's num_batches_tracked; BatchNorm fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched)):
            if keys:
                problems.append(f"{len(keys)} {label} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
        raise WeightsError(
            f"The weights {spec!r} given by `model.weights` do not match torchvision {arch}: {'; '.join(problems)}. "
            f"Expected a state dict of `torchvision.models.{arch}()` (fc.* keys optional, no 'module.' prefix); "
            "check that the file is for this model, or unset `model.weights` to train from scratch."
        )
    net.load_state_dict(state, strict=True)
