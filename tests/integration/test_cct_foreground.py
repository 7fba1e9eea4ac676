"""Caltech Camera Traps (robust-datasets) through robust-counterfactual's foreground: an (image,
category) pair without a box has no foreground in a training batch; the others have some."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from robust_counterfactual.counterfactual import batch_foreground

from robust.loader import BatchLoader
from robust_datasets import cct
from robust_datasets.testing import write_cct


@pytest.fixture()
def root(tmp_path) -> Path:
    write_cct(tmp_path)
    return tmp_path


def test_cct_pair_without_box_has_no_foreground_in_a_batch(root):
    for options in ({}, {"masks": True}):
        bundle = cct.load({"image_size": 16, **options}, root)
        loader = BatchLoader(bundle.splits["train"], bundle.info, torch.device("cpu"), batch_size=4)
        batch = next(loader.batches(loader.sequential()))
        foreground = batch_foreground(batch).flatten(1).sum(1)
        assert foreground[1] == 0 and bool((foreground[[0, 2, 3]] > 0).all()), options
