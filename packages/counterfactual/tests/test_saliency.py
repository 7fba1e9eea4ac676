"""Input-gradient saliency (robust_counterfactual.saliency): CFGen's grad_y / bbox_o and CLP's CE-gradient penalty."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from robust_counterfactual.saliency import input_gradient, outside_mask_penalty
from torch import nn

N, C, H, W, K = 3, 2, 4, 4, 3


def inside_mask() -> torch.Tensor:
    mask = torch.zeros(N, 1, H, W)
    mask[:, :, 1:3, 1:3] = 1
    return mask


def linear(weight: torch.Tensor):
    def logits(x):
        return x.flatten(1) @ weight.T

    return logits


def test_penalty_is_zero_when_the_model_reads_only_the_foreground():
    mask = inside_mask()
    weight = torch.randn(K, C, H, W) * mask[0]  # reads only the pixels inside the mask
    x, y = torch.randn(N, C, H, W), torch.tensor([0, 1, 2])
    for target in ("label_logit", "ce"):
        _, grad = input_gradient(linear(weight.flatten(1)), x, y, target=target)
        assert grad.abs().sum() > 0
        for reduction in ("mean_all", "per_background_pixel"):
            assert outside_mask_penalty(grad, mask, reduction) == 0
    _, grad = input_gradient(linear(torch.randn(K, C * H * W)), x, y)  # reads everything
    assert outside_mask_penalty(grad, mask) > 0 and outside_mask_penalty(grad, mask, "per_background_pixel") > 0


@pytest.mark.parametrize("target", ["label_logit", "ce"])
@pytest.mark.parametrize("reduction", ["mean_all", "per_background_pixel"])
def test_penalty_trains_the_model_by_double_backprop(target, reduction):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 8), nn.Tanh(), nn.Linear(8, K))
    x, y = torch.randn(N, C, H, W), torch.tensor([0, 1, 2])
    logits, grad = input_gradient(model, x, y, target=target)
    assert grad.requires_grad and logits.requires_grad
    torch.testing.assert_close(logits, model(x))
    penalty = outside_mask_penalty(grad, inside_mask(), reduction)
    penalty.backward()
    for param in (model[1].weight, model[3].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert x.grad is None  # the caller's tensor is not touched


def test_label_logit_gradient_is_per_sample_and_literal_indexing_is_the_count_weighted_sum():
    weight = torch.randn(K, C * H * W)
    x, y = torch.randn(N, C, H, W), torch.tensor([0, 1, 1])
    _, grad = input_gradient(linear(weight), x, y)
    for i in range(N):
        torch.testing.assert_close(grad[i].flatten(), weight[y[i]])
    _, literal = input_gradient(linear(weight), x, y, literal_batch_index=True)
    expected = 1 * weight[0] + 2 * weight[1]  # n_0 = 1, n_1 = 2: sum_c n_c d z_i[c] / d x_i
    for i in range(N):
        torch.testing.assert_close(literal[i].flatten(), expected)
    assert not torch.allclose(literal, grad)
    same = torch.tensor([2, 2, 2])
    _, one = input_gradient(linear(weight), x, same)
    _, block = input_gradient(linear(weight), x, same, literal_batch_index=True)
    torch.testing.assert_close(block, N * one)  # one class: B times the per-sample gradient


def test_literal_indexing_with_a_nonlinear_model_matches_the_jacobian():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 5), nn.Tanh(), nn.Linear(5, K))
    x, y = torch.randn(N, C, H, W), torch.tensor([2, 0, 2])
    counts = torch.bincount(y, minlength=K).float()
    _, literal = input_gradient(model, x, y, literal_batch_index=True)
    for i in range(N):
        jac = torch.autograd.functional.jacobian(lambda xi: model(xi[None])[0], x[i])  # (K, C, H, W)
        torch.testing.assert_close(literal[i], torch.einsum("k,kchw->chw", counts, jac))
        torch.testing.assert_close(input_gradient(model, x, y)[1][i], jac[y[i]])


def test_ce_gradient():
    weight = torch.randn(K, C * H * W)
    x, y = torch.randn(N, C, H, W), torch.tensor([0, 2, 1])
    logits, grad = input_gradient(linear(weight), x, y, target="ce")
    residual = F.softmax(logits.detach(), 1) - F.one_hot(y, K).float()
    torch.testing.assert_close(grad.flatten(1), residual @ weight)
    with pytest.raises(ValueError):
        input_gradient(linear(weight), x, y, target="ce", literal_batch_index=True)
    with pytest.raises(ValueError):
        input_gradient(linear(weight), x, y, target="logp")


def test_reductions_against_a_hand_computation():
    grad = torch.tensor(
        [
            [[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.0]]],
            [[[-2.0, 1.0], [0.0, 1.0]], [[1.0, 1.0], [-3.0, 2.0]]],
        ]
    )  # (2, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    # mean_all: squares outside the mask, summed, over all 16 elements
    outside = (2**2 + 3**2 + 4**2 + 1**2 + 2**2 + 0**2) + (1**2 + 2**2)
    torch.testing.assert_close(outside_mask_penalty(grad, mask), torch.tensor(outside / 16))
    # per_background_pixel: image 0 has 3 background pixels, image 1 one
    image0 = ((2**2 + 1**2) + (3**2 + 2**2) + (4**2 + 0**2)) / 3
    image1 = (1**2 + 2**2) / 1
    torch.testing.assert_close(
        outside_mask_penalty(grad, mask, "per_background_pixel"), torch.tensor((image0 + image1) / 2)
    )
    full = torch.ones(2, 1, 2, 2)  # no background: 0, not a division by zero
    assert outside_mask_penalty(grad, full, "per_background_pixel") == 0
    empty = outside_mask_penalty(grad[:0], mask[:0])
    assert empty == 0 and not torch.isnan(empty)
    with pytest.raises(ValueError):
        outside_mask_penalty(grad, mask, "sum")
    with pytest.raises(ValueError):
        outside_mask_penalty(grad, mask[:1])


@pytest.mark.parametrize("mask_hw", [(4, 4), (8, 4), (4, 8), (9, 9)])
def test_a_mask_of_another_image_size_is_refused_in_words(mask_hw):
    grad = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="does not match the gradient"):
        outside_mask_penalty(grad, torch.ones(2, 1, *mask_hw), "per_background_pixel")


def test_an_unknown_reduction_and_a_mask_for_more_images_are_refused():
    grad = torch.randn(2, 3, 8, 8)
    for unknown in ("bogus", "zzz"):  # before and after the known names in sort order
        with pytest.raises(ValueError, match="reduction must be"):
            outside_mask_penalty(grad, torch.ones(2, 1, 8, 8), unknown)
    with pytest.raises(ValueError, match="does not match the gradient"):
        outside_mask_penalty(grad, torch.ones(3, 1, 8, 8), "mean_all")
