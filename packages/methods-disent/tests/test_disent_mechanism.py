"""DisEnt and LfF (robust-disent): mechanisms the mutation session found untested (GCE's q and form,
the registered ``gce`` loss, what the loss EMA checkpoints, the class-max guard, the bias diagnostic)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from robust_disent.losses import (
    GCEConfig,
    RelativeDifficulty,
    SampleLossEMA,
    gce_reference,
    gce_textbook,
    generalized_cross_entropy,
)

from .test_disent import make_run, tiny, tiny_batch  # noqa: F401  (tiny: the autouse plugin fixture)


def _logits() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)


def test_both_gce_forms_default_to_q_07():
    """GCE's exponent defaults to the papers' q = 0.7 in both forms."""
    logits, targets = _logits()
    assert torch.equal(gce_reference(logits, targets), gce_reference(logits, targets, 0.7))
    assert torch.equal(gce_textbook(logits, targets), gce_textbook(logits, targets, 0.7))
    assert not torch.allclose(gce_reference(logits, targets), gce_reference(logits, targets, 0.4))


def test_textbook_gce_value_by_hand():
    """The textbook form is the value (1 - p_y^q) / q per sample, not only its gradient."""
    logits = torch.zeros(4, 2)  # p_y = 1/2 for every sample
    targets = torch.tensor([0, 1, 1, 0])
    value = gce_textbook(logits, targets, 0.7)
    assert value.shape == (4,)
    assert value.tolist() == pytest.approx([(1 - 0.5**0.7) / 0.7] * 4)
    confident = torch.tensor([[30.0, 0.0]])  # p_y ~ 1: GCE ~ 0
    assert gce_textbook(confident, torch.tensor([0]), 0.4).item() == pytest.approx(0.0, abs=1e-6)


def test_registered_gce_loss_honours_its_options_and_defaults():
    """The registered ``gce`` loss: the reference form at q = 0.7 by default, else the asked form and q."""
    logits, targets = _logits()
    assert torch.equal(generalized_cross_entropy()(logits, targets), gce_reference(logits, targets, 0.7))
    assert torch.equal(generalized_cross_entropy({})(logits, targets), gce_reference(logits, targets, 0.7))
    asked = generalized_cross_entropy({"q": 0.4, "form": "textbook"})(logits, targets)
    assert torch.equal(asked, gce_textbook(logits, targets, 0.4))
    assert GCEConfig().q == 0.7 and GCEConfig().form == "reference"


def test_gce_q_must_lie_in_zero_to_one():
    """GCE's q is validated to (0, 1]: 1 and 0.5 are accepted, 0 and above 1 refused."""
    assert GCEConfig(q=1.0).q == 1.0 and GCEConfig(q=0.5).q == 0.5
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValidationError):
            GCEConfig(q=bad)


def test_the_loss_ema_checkpoints_its_tables_not_the_labels():
    """The EMA's labels come from the dataset (non-persistent): a checkpoint holds only the two tables."""
    ema = SampleLossEMA(torch.tensor([0, 1, 1]), num_classes=2, alpha=0.7)
    assert set(ema.state_dict()) == {"loss", "updated"}
    restored = SampleLossEMA(torch.tensor([0, 1, 1]), num_classes=2, alpha=0.7)
    restored.load_state_dict({"loss": torch.tensor([1.0, 2.0, 3.0]), "updated": torch.ones(3)})  # strict
    assert restored.labels.tolist() == [0, 1, 1]


def test_normalisation_is_zero_where_the_class_maximum_is_not_positive():
    """The ``peak > 0`` guard: a class whose largest average is <= 0 normalises to 0, never to value / tiny."""
    ema = SampleLossEMA(torch.tensor([0, 0, 1]), num_classes=2, alpha=0.7)
    ema.update(torch.tensor([-1.0, -2.0, 4.0]), torch.tensor([0, 1, 2]))  # class 0 all negative: peak 0
    assert ema.normalized(torch.tensor([0, 1, 2])).tolist() == pytest.approx([0.0, 0.0, 1.0])
    rd = RelativeDifficulty(torch.tensor([0, 0]), num_classes=1, alpha=0.7)
    assert torch.equal(rd(-torch.ones(2), -torch.ones(2), torch.tensor([0, 1])), torch.zeros(2))


def test_predict_bias_is_the_bias_head_on_the_concatenated_features(tmp_path):
    """The bias diagnostic: C_b([z_i ; z_b]) per sample, one row of class logits each."""
    method = make_run(tmp_path / "run").method
    x = tiny_batch(5).x
    z = torch.cat([method.intrinsic.features(x), method.bias.features(x)], dim=1)
    out = method.predict_bias(x)
    assert out.shape == (5, method.bias.head.out_features)
    assert torch.equal(out, method.bias.head(z))
