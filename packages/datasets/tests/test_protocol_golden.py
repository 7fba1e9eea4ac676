"""The dataset transforms draw the same samples as the core's protocols did before they moved out of
the core: golden indices recorded with robust-core 29cffbb (``robust/protocols.py``,
``apply_protocol``) on the tiny dataset with every sample's index written into its pixels."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from robust.api import DatasetConfig, hookimpl, load_dataset
from robust.testing import TinyConfig, load_tiny, registered

GOLDEN = json.loads((Path(__file__).parent / "golden_protocol_indices.json").read_text())


class IdentifiedConfig(DatasetConfig):
    n_train: int = 600


def load_identified(config: IdentifiedConfig, data_root):
    """The tiny dataset, each image carrying its index in its first two pixels."""
    bundle = load_tiny(TinyConfig(n_train=config.n_train), data_root)
    splits = {}
    for name, split in bundle.splits.items():
        images = split.images.clone()
        ids = torch.arange(len(split))
        images[:, 0, 0, 0] = (ids % 256).to(torch.uint8)
        images[:, 0, 0, 1] = (ids // 256).to(torch.uint8)
        splits[name] = dataclasses.replace(split, images=images)
    return dataclasses.replace(bundle, splits=splits)


class Identified:
    @hookimpl
    def register_datasets(self, register):
        register("tiny-identified", load_identified, config=IdentifiedConfig, description="ids in pixels")


def ids(split) -> list[int]:
    return (split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: ",".join(f"{k}={v}" for k, v in c["options"].items()))
def test_protocol_seed_draws_the_same_samples_as_before(case):
    with registered(Identified(), "golden-identified"):
        bundle = load_dataset("tiny-identified", dict(case["options"]))
    assert {k: ids(v) for k, v in sorted(bundle.splits.items())} == case["splits"]
    assert bundle.splits["train"].labels.tolist() == case["train_labels"]  # label noise: the same flips
    assert bundle.info.train_group_counts == case["train_group_counts"]
    if "meta" in case:
        assert ids(bundle.aux["meta"]) == case["meta"]
    else:
        assert "meta" not in bundle.aux
