"""The dataset option of the ``groups`` dataset transform (torch-free: ``robust info`` reads it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GroupsOptions(BaseModel):
    """``--set dataset.groups=FILE``: every dataset accepts it; applied after the transforms that choose
    samples, so the file's indices are those of the splits as the other options make them."""

    model_config = ConfigDict(extra="forbid")

    groups: str | None = Field(
        None,
        description="Inferred groups from this CSV (as `robust discover` writes: split,index,label,cluster) replace "
        "the group labels of the splits it lists (group = label x cluster, bias = cluster); test keeps its true "
        "groups. Same dataset options as the run it was discovered from.",
    )
