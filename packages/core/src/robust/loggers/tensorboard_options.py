"""The TensorBoard logger's option (its own module: the logger plugin loads without pydantic)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TensorBoardOptions(BaseModel):
    """The logger's switch, a ``train.*`` option it owns (``register_options``)."""

    model_config = ConfigDict(extra="forbid")

    tensorboard: bool = Field(
        False, description="Write metrics to RUN_DIR/tensorboard (needs the tensorboard package)."
    )
