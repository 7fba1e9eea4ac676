"""Gaussian input noise, one of the study's mitigations (Section 5), as a batch transform.

``--set train.input_noise=0.1`` adds fresh N(0, 0.1²) noise to every training image of every batch,
in pixel units of [0, 1] (the images are normalised, so the std is that of the stored pixels only
where the dataset's std is 1), not clipped. Evaluation batches are never noised.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class InputNoiseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_noise: float = Field(
        0.0,
        ge=0,
        description="Std of Gaussian noise added to every training image, in pixel units of [0, 1], fresh for each "
        "batch, not clipped (a mitigation of rare spurious correlations; 0 = off).",
    )


def add_input_noise(x: Any, generator: Any, options: InputNoiseOptions) -> Any:
    """``x`` plus fresh Gaussian noise of std ``options.input_noise`` (in place), drawn from ``generator``."""
    import torch

    return x.add_(torch.randn(x.shape, device=x.device, generator=generator), alpha=options.input_noise)
