"""DisEnt's vanilla baseline: ERM (mean cross-entropy, Adam, no decay) with DisEnt's per-dataset
models, learning rates, batch sizes and 50,000 steps. The core's ERM with those presets."""

from __future__ import annotations

from typing import Any, ClassVar

from robust.api import ERM, Phase
from robust_disent.config import VanillaConfig
from robust_disent.presets import DATASET_PRESETS, VANILLA_PRESETS


class Vanilla(ERM):
    """One network trained on the mean loss, as DisEnt's ``--train_vanilla``."""

    Config = VanillaConfig
    config: VanillaConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = VANILLA_PRESETS
    dataset_presets: ClassVar[dict[str, str]] = DATASET_PRESETS

    @classmethod
    def default_amp(cls, config: VanillaConfig) -> str | None:
        """fp32 unless ``train.amp`` is set: the papers' numbers come from released code that trains in fp32."""
        return "off"

    def phases(self) -> list[Phase]:
        return [Phase("train", drop_last=True)]
