"""Infill operators (robust_counterfactual.infill): kept pixels are untouched, filled pixels follow CFGen's inpainters."""

from __future__ import annotations

import pytest
import torch
from robust_counterfactual.infill import (
    INFILL_NAMES_CF,
    INFILL_NAMES_F,
    InfillContext,
    apply_infill,
    cagan_infill,
    fgsm_infill,
    has_foreground,
    mean_infill,
    mrand_infill,
    random_infill,
    rectangle_mask,
    shuffle_infill,
    tile_infill,
)
from torch import nn

from robust import hookimpl
from robust.errors import ConfigError, UnknownNameError
from robust.registry import get_registry

N, C, H, W = 4, 3, 8, 8
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.5)


def box_mask(n: int, h: int, w: int, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    mask = torch.zeros(n, 1, h, w)
    mask[:, :, top:bottom, left:right] = 1
    return mask


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * H * W, classes)
        self.modes_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append(self.training)
        return self.head(self.drop(torch.tanh(self.conv(x))).flatten(1))


def make_batch(seed: int = 0) -> tuple[torch.Tensor, InfillContext]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(N, C, H, W, generator=gen)
    ctx = InfillContext.from_stats(MEAN, STD, generator=torch.Generator().manual_seed(seed + 1))
    x = (pixels - ctx.mean) / ctx.std
    x[0, 0, 0, 0] = -0.0  # a negative zero must survive too
    ctx.labels = torch.tensor([0, 1, 2, 1])
    ctx.model = TinyNet()
    ctx.precomputed = torch.randn(N, C, H, W, generator=gen)
    return x, ctx


OPERATORS = {
    "mean": mean_infill,
    "random": random_infill,
    "shuffle": shuffle_infill,
    "tile": tile_infill,
    "mrand": mrand_infill,
    "fgsm": fgsm_infill,
    "cagan": cagan_infill,
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_kept_pixels_are_bit_identical_and_filled_ones_change(name):
    x, ctx = make_batch()
    keep = 1 - box_mask(N, H, W, 3, 6, 2, 6)  # fill a box, keep the rest (a counterfactual)
    if name in ("mrand", "fgsm"):
        keep = 1 - keep  # factual: keep the object, fill the background
    out = OPERATORS[name](x, keep, ctx)
    assert out.shape == x.shape and out.dtype == x.dtype
    kept = (keep > 0.5).expand_as(x)
    assert torch.equal(bits(out)[kept], bits(x)[kept])
    changed = (out != x)[~kept].float().mean()
    assert changed > 0.9, f"{name} changed only {changed:.0%} of the filled pixels"


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_registered_and_applied_through_the_registry(name):
    x, ctx = make_batch()
    keep = box_mask(N, H, W, 2, 5, 2, 5)
    entry = get_registry().get("infill", name)
    assert entry.plugin == "counterfactual" and entry.description
    assert entry.load() is OPERATORS[name]
    if name in ("mean", "tile", "cagan"):  # deterministic
        assert torch.equal(apply_infill(name, x, keep, ctx), OPERATORS[name](x, keep, ctx))


def test_names():
    assert INFILL_NAMES_CF == ("none", "mean", "random", "shuffle", "tile", "cagan")
    assert INFILL_NAMES_F == ("none", "random", "shuffle", "mrand", "fgsm", "mean", "tile")
    registered = set(get_registry().names("infill"))
    assert (set(INFILL_NAMES_CF) | set(INFILL_NAMES_F)) - {"none"} <= registered


def _const_infill(x, keep, ctx, *, value=7.0):
    return torch.where(keep > 0.5, x, torch.full_like(x, value))


class ConstInfillPlugin:
    @hookimpl
    def register_infills(self, register):
        register("test-const", _const_infill, description="constant")


def test_apply_infill_finds_plugin_infills_and_checks_options(register_plugin):
    x, ctx = make_batch()
    keep = box_mask(N, H, W, 2, 5, 2, 5)
    with pytest.raises(UnknownNameError):
        apply_infill("test-const", x, keep, ctx)
    with register_plugin(ConstInfillPlugin(), "const-infill"):
        out = apply_infill("test-const", x, keep, ctx, value=3.0)
        assert torch.all(out[(keep == 0).expand_as(x)] == 3.0)
        with pytest.raises(ConfigError, match="value"):
            apply_infill("test-const", x, keep, ctx, colour=1.0)
    with pytest.raises(ValueError, match="none"):
        apply_infill("none", x, keep, ctx)
    with pytest.raises(UnknownNameError, match="tile"):
        apply_infill("tiles", x, keep, ctx)


def test_mean_fills_zero():
    x, ctx = make_batch()
    keep = box_mask(N, H, W, 0, 4, 0, 8)
    out = mean_infill(x, keep, ctx)
    assert torch.all(out[:, :, 4:] == 0) and torch.equal(out[:, :, :4], x[:, :, :4])


def test_random_is_a_noisy_colour_in_pixel_range_and_reproducible():
    x, ctx = make_batch()
    keep = torch.zeros(N, 1, H, W)
    out = random_infill(x, keep, ctx)
    pixels = out * ctx.std + ctx.mean
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    ctx.generator = torch.Generator().manual_seed(5)
    flat = random_infill(x, keep, ctx, noise_std=0.0) * ctx.std + ctx.mean
    colour = flat[:, :, :1, :1]
    assert torch.allclose(flat, colour.expand_as(flat), atol=1e-6)  # constant over space
    assert colour.flatten(1).std(0).min() > 0  # differs between images
    ctx.generator = torch.Generator().manual_seed(5)
    assert torch.equal(random_infill(x, keep, ctx, noise_std=0.0) * ctx.std + ctx.mean, flat)  # reproducible


def test_shuffle_permutes_all_values_of_the_batch():
    x, ctx = make_batch()
    out = shuffle_infill(x, torch.zeros(N, 1, H, W), ctx)
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)
    assert not torch.equal(out, x)
    # across images and channels: some value of image 0 lands in another image
    moved = torch.isin(out[1:], x[0]).any()
    assert moved
    ctx.generator = torch.Generator().manual_seed(1)
    first = shuffle_infill(x, torch.zeros(N, 1, H, W), ctx)
    ctx.generator = torch.Generator().manual_seed(1)
    assert torch.equal(first, shuffle_infill(x, torch.zeros(N, 1, H, W), ctx))


def striped_image(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w) with every pixel distinct."""
    return torch.arange(2 * h * w, dtype=torch.float32).view(1, 2, h, w)


def test_tile_repeats_the_background_rows_over_the_box():
    x = striped_image(8, 6)
    keep = 1 - box_mask(1, 8, 6, 3, 8, 1, 5)  # rows 0-2 entirely background; columns 0 and 5 only
    out = tile_infill(x, keep)
    for r in range(3, 8):
        for c in range(1, 5):
            assert torch.equal(out[0, :, r, c], x[0, :, r % 3, c])
    kept = (keep > 0.5).expand_as(x)
    assert torch.equal(out[kept], x[kept])


def test_tile_uses_columns_when_they_are_longer_and_rows_on_ties():
    x = striped_image(6, 8)
    keep = 1 - box_mask(1, 6, 8, 1, 5, 5, 8)  # columns 0-4 background (5), rows 0 and 5 (1 each)
    out = tile_infill(x, keep)
    for r in range(1, 5):
        for c in range(5, 8):
            assert torch.equal(out[0, :, r, c], x[0, :, r, c % 5])
    x = striped_image(4, 4)
    keep = 1 - box_mask(1, 4, 4, 3, 4, 3, 4)  # rows 0-2 and columns 0-2: a tie
    out = tile_infill(x, keep)
    assert torch.equal(out[0, :, 3, 3], x[0, :, 0, 3])  # rows tiled, not columns (x[0, :, 3, 0])


def test_tile_degenerate_cases():
    x = striped_image(6, 4)
    assert torch.equal(tile_infill(x, torch.zeros(1, 1, 6, 4)), torch.zeros_like(x))  # nothing to keep
    assert torch.equal(tile_infill(x, torch.ones(1, 1, 6, 4)), x)  # nothing to fill
    keep = 1 - box_mask(1, 6, 4, 2, 4, 0, 4)  # a band over the full width: no full column
    out = tile_infill(x, keep)
    assert torch.equal(out[0, :, 2], x[0, :, 0]) and torch.equal(out[0, :, 3], x[0, :, 1])  # rows 0-1 tiled
    diagonal = 1 - torch.eye(4)[None, None]  # no row or column entirely background
    x = striped_image(4, 4)
    out = tile_infill(x, diagonal)
    assert torch.all(out[0, :, torch.arange(4), torch.arange(4)] == 0)


def test_tile_with_bbox_overwrites_the_whole_box_of_the_fill_region():
    x = striped_image(8, 8)
    fill = torch.zeros(1, 1, 8, 8)
    fill[0, 0, 4:7, 2] = 1
    fill[0, 0, 6, 2:6] = 1  # an L in rows 4-6, columns 2-5
    out = tile_infill(x, 1 - fill, use_bbox_to_mask=True)
    for r in range(4, 7):
        for c in range(2, 6):
            assert torch.equal(out[0, :, r, c], x[0, :, r % 4, c])  # rows 0-3 are the longest strip
    outside = (rectangle_mask(fill) == 0).expand_as(x)
    assert torch.equal(out[outside], x[outside])
    plain = tile_infill(x, 1 - fill)
    assert torch.equal(plain[0, :, 4, 4], x[0, :, 4, 4])  # without the box, the L's inside is kept


def test_tile_is_per_image():
    x = torch.cat([striped_image(6, 6), striped_image(6, 6) + 1000])
    keep = torch.ones(2, 1, 6, 6)
    keep[0, :, 4:, :] = 0  # image 0: rows 0-3 strip
    keep[1, :, :, 3:] = 0  # image 1: columns 0-2 strip
    out = tile_infill(x, keep)
    assert torch.equal(out[0, :, 4:], x[0, :, :2])
    assert torch.equal(out[1, :, :, 3:], x[1, :, :, :3])


def test_mrand_takes_the_tiled_background_of_another_class():
    labels = torch.tensor([0, 0, 1, 2])
    n, h, w = 4, 8, 8
    x = torch.empty(n, 2, h, w)
    fg = torch.zeros(n, 1, h, w)
    for i, y in enumerate(labels.tolist()):
        x[i] = 10.0 * (y + 1)  # background colour of the class
        top, left = (i % 2) * 4, (i // 2) * 4
        x[i, :, top : top + 3, left : left + 3] = -(y + 1.0)  # object colour of the class
        fg[i, :, top : top + 3, left : left + 3] = 1
    seen: dict[int, set[float]] = {i: set() for i in range(n)}
    for seed in range(30):
        ctx = InfillContext.from_stats((0.5,), (0.5,), generator=torch.Generator().manual_seed(seed), labels=labels)
        out = mrand_infill(x, fg, ctx)
        kept = (fg > 0.5).expand_as(x)
        assert torch.equal(out[kept], x[kept])
        for i in range(n):
            background = out[i][~kept[i]].unique()
            assert background.numel() == 1, "a partner's object leaked into the background"
            value = float(background)
            assert value in (10.0, 20.0, 30.0) and value != 10.0 * (labels[i].item() + 1)
            seen[i].add(value)
    assert seen[0] == {20.0, 30.0} and seen[2] == {10.0, 30.0}  # uniform over other-class images


def test_mrand_without_another_class_fills_grey():
    x = torch.randn(3, 2, 6, 6)
    fg = box_mask(3, 6, 6, 2, 4, 2, 4)
    ctx = InfillContext.from_stats((0.5,), (0.5,), labels=torch.tensor([1, 1, 1]))
    out = mrand_infill(x, fg, ctx)
    assert torch.all(out[(fg == 0).expand_as(x)] == 0)
    with pytest.raises(ValueError, match="labels"):
        mrand_infill(x, fg, InfillContext.from_stats((0.5,), (0.5,)))


def test_fgsm_perturbs_only_the_background_within_eps_without_touching_the_model():
    x, ctx = make_batch()
    net = ctx.model
    net.train()
    net.drop.eval()  # a mixed mode must come back as it was
    fg = box_mask(N, H, W, 2, 6, 2, 6)
    eps = 0.3
    out = fgsm_infill(x, fg, ctx, eps=eps)
    kept = (fg > 0.5).expand_as(x)
    assert torch.equal(bits(out)[kept], bits(x)[kept])
    change = (out - x)[~kept]
    assert change.abs().max() <= eps + 1e-6 and (change != 0).float().mean() > 0.5
    lo, hi = (0 - ctx.mean) / ctx.std, (1 - ctx.mean) / ctx.std
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)
    assert not out.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert net.modes_seen == [False]  # attacked in eval mode
    assert net.training and net.conv.training and not net.drop.training
    ctx.model, ctx.module = net.forward, None  # a bound method: its module is found
    fgsm_infill(x, fg, ctx)
    assert net.modes_seen == [False, False] and net.training


def test_fgsm_ascends_the_loss_and_clips_to_the_pixel_range():
    weight = torch.randn(2, C * H * W)
    weight[1] = weight[0] + torch.where(torch.rand(C * H * W) < 0.5, -1.0, 1.0)

    def logits(x):
        return x.flatten(1) @ weight.T

    x = torch.zeros(N, C, H, W)
    labels = torch.zeros(N, dtype=torch.long)
    ctx = InfillContext.from_stats((0.5,) * C, (0.5,) * C, labels=labels, model=logits)
    out = fgsm_infill(x, torch.zeros(N, 1, H, W), ctx, eps=0.6)
    # d CE(label 0) / dx = p1 (w1 - w0): the ascent step moves every pixel along sign(w1 - w0)
    direction = torch.sign(weight[1] - weight[0]).view(1, C, H, W)
    assert torch.all(torch.sign(out) == direction)
    assert out.abs().max() <= 0.6 + 1e-6
    near_top = torch.full((N, C, H, W), 0.9)  # pixel 0.95; the valid range is [-1, 1]
    out = fgsm_infill(near_top, torch.zeros(N, 1, H, W), ctx, eps=0.6)
    assert out.max() <= 1.0 + 1e-6 and out.max() > 0.95
    ctx = InfillContext.from_stats((0.5,) * C, (0.25,) * C, labels=labels, model=logits)  # range [-2, 2]
    out = fgsm_infill(near_top, torch.zeros(N, 1, H, W), ctx, eps=0.6)
    assert out.max() > 1.2
    out = fgsm_infill(near_top, torch.zeros(N, 1, H, W), ctx, eps=0.6, clip=(-1.0, 1.0))  # the reference's clip
    assert out.max() <= 1.0 + 1e-6


def test_cagan_uses_the_precomputed_images_and_needs_them():
    x, ctx = make_batch()
    keep = 1 - box_mask(N, H, W, 2, 6, 2, 6)
    out = cagan_infill(x, keep, ctx)
    filled = (keep == 0).expand_as(x)
    assert torch.equal(out[filled], ctx.precomputed[filled])
    ctx.precomputed = None
    with pytest.raises(ConfigError, match="precomputed CAGAN"):
        cagan_infill(x, keep, ctx)
    with pytest.raises(ConfigError, match="precomputed CAGAN"):
        apply_infill("cagan", x, keep, ctx)


def test_rectangle_mask_and_has_foreground():
    mask = torch.zeros(4, 1, 6, 7)
    mask[0, 0, 1:5, 1] = 1
    mask[0, 0, 4, 1:6] = 1  # an L: rows 1-4, columns 1-5
    mask[1, 0, 2, 3] = 1  # a single pixel
    mask[3, 0, 0, 6] = mask[3, 0, 5, 0] = 1  # two opposite corners: the box is the whole image
    rect = rectangle_mask(mask)
    expected = torch.zeros(4, 1, 6, 7)
    expected[0, 0, 1:5, 1:6] = 1
    expected[1, 0, 2, 3] = 1
    expected[3] = 1
    assert torch.equal(rect, expected)
    assert torch.equal(has_foreground(mask), torch.tensor([True, True, False, True]))
    assert rectangle_mask(mask.to(torch.uint8)).dtype == torch.float32


def test_bad_mask_shape_is_rejected():
    x, ctx = make_batch()
    with pytest.raises(ValueError, match="keep mask"):
        mean_infill(x, torch.ones(N, 1, H, W - 1), ctx)


def test_boxes_to_mask_rasterises_end_exclusive_boxes():
    from robust_counterfactual.infill import boxes_to_mask

    mask = boxes_to_mask(torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]]), height=5, width=4)
    assert mask.shape == (2, 1, 5, 4)
    expected = torch.zeros(5, 4)
    expected[2:4, 1:3] = 1
    assert torch.equal(mask[0, 0], expected)
    assert mask[1].sum() == 0
