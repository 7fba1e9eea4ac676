"""The dataset options of the ``mask_provider`` dataset transform (torch-free: ``robust info`` reads them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MaskProviderOptions(BaseModel):
    """``--set dataset.mask_provider=NAME``: every dataset accepts it (after frac, the meta set, the
    long tail and the noise, so the masks are those of the images the run trains on)."""

    model_config = ConfigDict(extra="forbid")

    mask_provider: str | None = Field(
        None,
        description="Foreground masks of the training split and the meta set from this registered mask provider "
        "(robust list mask-providers), for datasets without masks.",
    )
    mask_weights: str | None = Field(
        None,
        description="Weights file of a model-based mask provider (deeplabv3: a state dict); default: torchvision's "
        "cache.",
    )

    @model_validator(mode="after")
    def _weights_need_a_provider(self) -> MaskProviderOptions:
        if self.mask_weights is not None and self.mask_provider is None:
            raise ValueError("mask_weights names the weights of a mask provider: give dataset.mask_provider too")
        return self
