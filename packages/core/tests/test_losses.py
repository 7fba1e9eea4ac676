from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F

from robust.losses import CrossEntropyConfig, cross_entropy


def test_per_sample_cross_entropy():
    logits = torch.randn(5, 3, requires_grad=True)
    targets = torch.tensor([0, 2, 1, 1, 0])
    loss = cross_entropy(CrossEntropyConfig())(logits, targets)
    assert loss.shape == (5,)
    expected = -F.log_softmax(logits, 1)[torch.arange(5), targets]
    torch.testing.assert_close(loss, expected)
    loss[0].backward()
    assert logits.grad[1:].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_label_smoothing():
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 0])
    eps = 0.2
    loss = cross_entropy(CrossEntropyConfig(label_smoothing=eps))(logits, targets)
    logp = F.log_softmax(logits, 1)
    expected = (1 - eps) * -logp[torch.arange(4), targets] + eps * -logp.mean(1)
    torch.testing.assert_close(loss, expected)


def test_defaults_and_validation():
    assert cross_entropy()(torch.zeros(2, 4), torch.tensor([0, 1])).shape == (2,)
    with pytest.raises(pydantic.ValidationError):
        CrossEntropyConfig(label_smoothing=1.5)
    with pytest.raises(pydantic.ValidationError):
        CrossEntropyConfig(reduction="mean")
