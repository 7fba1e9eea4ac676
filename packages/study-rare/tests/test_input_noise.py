"""train.input_noise (the study's Gaussian input noise, a batch transform): σ in [0, 1] pixel units,
drawn from the training generator, never on evaluation batches."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from robust.loader import BatchLoader
from robust.testing import TinyConfig, load_tiny
from robust_rare.input_noise import InputNoiseOptions, add_input_noise


def test_input_noise_is_added_to_training_batches_only():
    bundle = load_tiny(TinyConfig(), None)
    split = bundle.splits["train"]
    plain = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=96)
    noise = partial(lambda options, x, gen: add_input_noise(x, gen, options), InputNoiseOptions(input_noise=0.2))
    noisy = BatchLoader(split, bundle.info, torch.device("cpu"), batch_size=96, batch_transforms=[noise])
    order = plain.sequential()
    clean = next(plain.batches(order, generator=torch.Generator().manual_seed(0))).x
    a = next(noisy.batches(order, generator=torch.Generator().manual_seed(0))).x
    b = next(noisy.batches(order, generator=torch.Generator().manual_seed(0))).x
    assert torch.equal(a, b)  # drawn from the training generator: reproducible
    std = torch.tensor(bundle.info.std).view(1, -1, 1, 1)
    assert ((a - clean) * std).std().item() == pytest.approx(0.2, rel=0.05)  # σ in [0, 1] pixel units
    assert torch.equal(next(noisy.batches(order)).x, clean)  # evaluation: no generator, no noise
