"""CFGen (robust-cfgen): mechanisms the mutation session found untested (the penalty ramp's length,
FGSM's radius, factual-only configurations, what a checkpoint holds)."""

from __future__ import annotations

import pytest
import torch

from robust.api import Run, resolve_run_config

from .test_cfgen import SGD, shapes, shapes_batches, shapes_run  # noqa: F401  (shapes: the dataset fixture)

pytestmark = pytest.mark.usefixtures("shapes", "one_thread")

PLAIN_SGD = [*(f"{k}={v}" for k, v in SGD.items()), "schedule=constant"]


def _foreground(batch) -> tuple[torch.Tensor, torch.Tensor]:
    mask = (batch.mask > 0.5).float()
    return mask, mask.flatten(1).amax(1) > 0


def test_reg_anneal_ramps_over_epochs_times_batches_per_epoch(tmp_path):
    """The penalty ramp's length is the run's training steps: epochs x batches per epoch (3 x 32/8 = 12)."""
    extra = ["train.batch_size=8", "cf_infill=none", "f_infill=none"]
    full = shapes_run(tmp_path / "full", extra)
    sets = [*PLAIN_SGD, "dataset.classes=3", *extra, "reg_anneal=0.5"]
    resolved = resolve_run_config("cfgen", dataset="cfgen-shapes", model="cnn", sets=sets, flags={"epochs": 3})
    ramp = Run(resolved, tmp_path / "ramp", quiet=True).method
    assert ramp.total_steps == 12
    ramp.model.load_state_dict(full.method.model.state_dict())
    batch = shapes_batches(full, 1)[0]
    expected = full.method.update(batch, 3)["reg"].item() * 3 / (12 * 0.5)
    assert expected > 0
    assert ramp.update(batch, 3)["reg"].item() == pytest.approx(expected, rel=1e-5)


def test_fgsm_factual_background_stays_within_fgsm_eps(tmp_path):
    """f_infill=fgsm honours fgsm_eps: the F image's background moves by at most eps, the foreground not at all."""
    eps = 0.05
    run = shapes_run(tmp_path, ["cf_infill=none", "f_infill=fgsm", f"fgsm_eps={eps}", "reg=none"])
    batch = shapes_batches(run, 1)[0]
    mask, fg = _foreground(batch)
    torch.manual_seed(0)
    x_cf, x_f = run.method.generate(batch.x[fg], batch.y[fg], mask[fg])
    assert x_cf is None and x_f is not None
    moved = (x_f - batch.x[fg]).abs()
    background = (mask[fg] == 0).expand_as(moved)
    assert float(moved[~background].max()) == 0.0
    assert 0.0 < float(moved[background].max()) <= eps + 1e-6


@pytest.mark.parametrize("f_infill", ["mean", "shuffle"])
def test_factual_images_alone_still_use_the_foreground(tmp_path, f_infill):
    """F images are a foreground need of their own: with CF and the penalty off, each foreground still adds one F image."""
    run = shapes_run(tmp_path, ["cf_infill=none", f"f_infill={f_infill}", "reg=none"])
    assert run.method.use_foreground
    batch = shapes_batches(run, 1)[0]
    _, fg = _foreground(batch)
    seen = []
    original = run.method.model.forward

    def spy(x):
        seen.append(len(x))
        return original(x)

    run.method.model.forward = spy
    run.method.update(batch, 0)
    assert 0 < int(fg.sum()) < len(fg) and seen == [len(fg) + int(fg.sum())]


def test_a_checkpoint_holds_the_model_not_the_datasets_normalisation(tmp_path):
    """mean and std come from the dataset (non-persistent buffers): the method's state is the model's alone."""
    method = shapes_run(tmp_path, ["reg=none"]).method
    state = method.state_dict()
    assert state and all(key.startswith("model.") for key in state), sorted(state)
    method.load_state_dict({k: v.clone() for k, v in state.items()})  # strict: nothing else is expected
    assert method.mean.shape == method.std.shape == (1, 3, 1, 1)
