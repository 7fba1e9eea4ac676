"""Empirical risk minimisation: minimise the average training loss. The reference method."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from robust.config import MethodConfig
from robust.data import Batch
from robust.errors import ConfigError
from robust.method import Method, MethodContext

#: The backbone group_DRO and JTT fine-tune (methods that start from an ERM model use the same).
RESNET50_IMAGENET = {"name": "resnet50", "weights": "IMAGENET1K_V1"}


class ERMConfig(MethodConfig):
    """Options of ERM and of the optimiser most baselines share."""

    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("sgd", description="Optimiser.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, description="SGD (and RMSprop) momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum for SGD (needs momentum > 0).")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (L2).")
    schedule: Literal["constant", "cosine", "step", "plateau"] = Field(
        "constant",
        description="Learning-rate schedule over epochs; plateau multiplies the lr by `gamma` when val loss "
        "stops improving for `patience` evaluations.",
    )
    milestones: list[int] = Field(
        default_factory=list, description="Epochs at which `step` multiplies the lr by `gamma`."
    )
    gamma: float = Field(0.1, gt=0, description="Factor of the `step` and `plateau` schedules.")
    patience: int = Field(1, ge=0, description="Evaluations without val-loss improvement before `plateau` decays.")
    loss: str = Field("ce", description="Registered loss (see `robust list losses`).")
    clip_grad_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")


def make_optimizer(params, config: ERMConfig) -> torch.optim.Optimizer:
    """The optimiser an ``ERMConfig`` describes (methods reuse it for their own networks)."""
    if config.optimizer == "sgd":
        if config.nesterov and config.momentum <= 0:
            raise ConfigError("nesterov=true needs momentum > 0 (PyTorch's SGD refuses Nesterov without momentum).")
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: ERMConfig, epochs: int):
    """The schedule an ``ERMConfig`` describes, or None. Per epoch, except ``plateau``, which the
    method steps with the val loss after each evaluation (see :meth:`ERM.on_evaluation`)."""
    if config.schedule == "plateau":
        # Lightning's ReduceLROnPlateau defaults as CFGen uses them: mode min, threshold 1e-4 (relative).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.gamma, patience=config.patience, threshold=1e-4
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    return None


class ERM(Method):
    """Train one classifier on the mean per-sample loss."""

    Config = ERMConfig
    config: ERMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The generated datasets: Adam trains the small models in a few epochs on a CPU.
        "synthetic": {"method": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}, "train": {"epochs": 8}},
        # group_DRO's README command for Waterbirds ERM: SGD lr 1e-3, wd 1e-4, batch 128, 300 epochs, on
        # torchvision's ImageNet-pretrained ResNet-50 (`resnet50(pretrained=True)`: IMAGENET1K_V1).
        "waterbirds": {
            "method": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4},
            "train": {"batch_size": 128, "epochs": 300},
            "model": dict(RESNET50_IMAGENET),
        },
        # JTT authors' best ERM on CelebA (anniesch/jtt#2): lr 1e-4, wd 1e-4; group_DRO: batch 128, 50 epochs;
        # both the ImageNet-pretrained ResNet-50.
        "celeba": {
            "method": {"optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 1e-4},
            "train": {"batch_size": 128, "epochs": 50},
            "model": dict(RESNET50_IMAGENET),
        },
    }
    dataset_presets: ClassVar[dict[str, str]] = {
        "synthetic-cmnist": "synthetic",
        "synthetic-waterbirds": "synthetic",
        "waterbirds": "waterbirds",
        "celeba": "celeba",
    }

    def __init__(self, config: ERMConfig, ctx: MethodContext) -> None:
        super().__init__(config, ctx)
        self.model = ctx.build_model()
        self.loss = ctx.build_loss(config.loss)
        optimizer = make_optimizer(self.model.parameters(), config)
        interval = "manual" if config.schedule == "plateau" else "epoch"
        self.add_optimizer("model", optimizer, make_scheduler(optimizer, config, ctx.epochs), interval=interval)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        loss = self.loss(self.model(batch.x), batch.y).mean()
        self.optimize(loss, clip_grad_norm=self.config.clip_grad_norm)
        return {"loss": loss.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_evaluation(self, record: dict[str, Any]) -> None:
        """Step a plateau schedule with the validation loss."""
        val_loss = record["metrics"].get("val/loss")
        if self.config.schedule == "plateau" and val_loss is not None:
            self._schedulers["model"].scheduler.step(val_loss)
