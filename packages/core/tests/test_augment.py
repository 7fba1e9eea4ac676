"""The pad-and-crop augmentations: zero padding (``crop_flip``) and mirrored borders
(``crop_flip_reflect``, torchvision's ``RandomCrop(padding_mode="reflect")``), with their masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust.augment import augment, random_translate
from robust.errors import ConfigError
from robust.registry import get_registry


def offsets(seed: int, n: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop offsets ``random_translate`` draws: rows, then columns, uniform in [0, 2 pad]."""
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    return dy, dx


@pytest.mark.parametrize(("mode", "np_mode"), [("zeros", "constant"), ("reflect", "reflect")])
def test_random_translate_is_a_crop_of_the_padded_image(mode, np_mode):
    n, pad = 5, 2
    x = torch.rand(n, 3, 6, 7, dtype=torch.float64)
    mask = (torch.rand(n, 1, 6, 7) > 0.5).double()
    out, out_mask, _ = random_translate(x, mask, None, torch.Generator().manual_seed(3), pad, padding_mode=mode)
    dy, dx = offsets(3, n, pad)
    for i in range(n):
        for source, result in ((x[i], out[i]), (mask[i], out_mask[i])):
            padded = np.pad(source.numpy(), ((0, 0), (pad, pad), (pad, pad)), mode=np_mode)
            window = padded[:, dy[i] : dy[i] + 6, dx[i] : dx[i] + 7]
            assert np.array_equal(result.numpy(), window), (mode, i)


def test_reflect_borders_hold_image_content_and_zero_borders_hold_zeros():
    x = torch.rand(64, 3, 8, 8) + 1.0  # no zero anywhere in the images
    gen = torch.Generator().manual_seed(0)
    zeros, _, _ = augment("crop_flip", x, None, None, gen, pad=2)
    gen = torch.Generator().manual_seed(0)
    mirrored, _, _ = augment("crop_flip_reflect", x, None, None, gen, pad=2)
    assert (zeros == 0).any() and not (mirrored == 0).any()
    shifted = (zeros == 0).flatten(1).any(1)  # the same offsets and flips: the same images move
    assert torch.equal(zeros[~shifted], mirrored[~shifted])
    assert "crop_flip_reflect" in get_registry().names("augmentation")


def test_crop_flip_keeps_its_zero_padding_and_random_stream():
    """Other methods' crop_flip is unchanged: the same draws, zeros in the pad."""
    x = torch.rand(8, 1, 4, 4) + 1.0
    out, _, _ = augment("crop_flip", x, None, None, torch.Generator().manual_seed(1), pad=1)
    gen = torch.Generator().manual_seed(1)
    dy, dx = (torch.randint(0, 3, (8,), generator=gen) for _ in range(2))
    flip = torch.rand(8, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(8):
        expected = padded[i, :, dy[i] : dy[i] + 4, dx[i] : dx[i] + 4]
        assert torch.equal(out[i], expected.flip(-1) if flip[i] else expected)


def test_reflect_padding_larger_than_the_image_is_refused():
    with pytest.raises(ConfigError, match="Reflect padding"):
        random_translate(torch.zeros(1, 1, 3, 3), None, None, torch.Generator(), 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        random_translate(torch.zeros(1, 1, 3, 3), None, None, torch.Generator(), 1, padding_mode="edge")
