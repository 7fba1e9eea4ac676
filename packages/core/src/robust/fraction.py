"""``dataset.frac``: keep a stratified fraction of every split, the one dataset transform the core owns.

Registered through ``register_dataset_transforms`` like any plugin's (order 0: first). The draw of
split ``k`` (splits in name order) uses ``numpy.random.default_rng(protocol_seed + k)`` and keeps
``round(frac * n)`` (at least one) samples of each group, or of each class when the split has no
groups; the indices are kept in their original order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class FractionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frac: float | None = Field(
        None, gt=0, le=1, description="Keep this fraction of every split, stratified by group (or class)."
    )
    protocol_seed: int = Field(
        0, ge=0, description="Seed of the dataset transforms that draw samples (frac, meta set, long tail, noise)."
    )


def stratified_fraction(strata: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Sorted indices keeping ``round(frac * n)`` (at least 1) samples of every stratum."""
    rng = np.random.default_rng(seed)
    kept = []
    for value in np.unique(strata):
        index = np.flatnonzero(strata == value)
        kept.append(rng.choice(index, size=max(1, round(frac * len(index))), replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, dtype=np.int64)


def keep_fraction(bundle: Any, options: FractionOptions) -> Any:
    """``bundle`` (a :class:`robust.data.DatasetBundle`) with ``options.frac`` of every split kept."""
    import torch

    from robust.data import replace_splits, subset_split

    if options.frac is None:
        return bundle
    splits = dict(bundle.splits)
    for k, (name, split) in enumerate(sorted(splits.items())):
        strata = (split.groups if split.groups is not None else split.labels).numpy()
        kept = stratified_fraction(strata, options.frac, options.protocol_seed + k)
        splits[name] = subset_split(split, torch.from_numpy(kept))
    return replace_splits(bundle, splits, transform_options=options.model_dump(exclude_defaults=True))
