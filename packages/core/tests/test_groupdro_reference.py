"""Group DRO (robust.groupdro, the built-in ``groupdro``) beside a port of kohpangwei/group_DRO's step.

Our method is driven by the engine (``Run.fit``); the port (groupdro_reference.py) replays the
batches the engine handed it, from the same initial weights. Weights, the group weights q (the
reference's ``adv_probs``) and each step's loss must agree to float32 round-off.
"""

from __future__ import annotations

import copy

import pytest
import torch

from robust.data import Batch
from robust.engine import Run
from robust.resolve import resolve_run_config

from .reference.groupdro_reference import GroupDROReference
from .tiny import TinyPlugin

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


@pytest.mark.parametrize(
    ("step_size", "adjustment"), [(0.01, 0.0), (0.5, 2.0)], ids=["authors-defaults", "large-step-with-C"]
)
def test_groupdro_steps_equal_the_released_loss_computer(tmp_path, one_thread, step_size, adjustment):
    sets = [
        "train.batch_size=32",
        "lr=0.05",
        "weight_decay=0.01",
        f"step_size={step_size}",
        f"generalization_adjustment={adjustment}",
    ]
    resolved = resolve_run_config("groupdro", dataset="tiny", sets=sets, flags={"steps": 6, "seed": 2})
    run = Run(resolved, tmp_path / "run", quiet=True)
    method = run.method
    groups = method.ctx.data.splits["train"].groups
    n_groups = 4
    counts = (torch.arange(n_groups).unsqueeze(1) == groups).sum(1).float()  # dro_dataset.py's group counts
    reference = GroupDROReference(
        copy.deepcopy(method.model),
        n_groups,
        counts,
        lr=0.05,
        weight_decay=0.01,
        step_size=step_size,
        generalization_adjustment=adjustment,
    )
    seen: list[tuple[Batch, torch.Tensor, torch.Tensor]] = []  # batch, loss, q after the step
    update = method.update

    def spy(batch: Batch, step: int):
        logs = update(batch, step)
        seen.append((batch.replace(x=batch.x.clone()), logs["loss"], method.q.clone()))
        return logs

    method.update = spy
    run.fit()
    assert len(seen) == 6
    for step, (batch, loss, q) in enumerate(seen):
        assert batch.group is not None
        ref_loss = reference.step(batch.x, batch.y, batch.group)
        torch.testing.assert_close(q, reference.loss_computer.adv_probs, **TOL, msg=f"q after step {step}")
        # The reference's in-place `adjusted_loss += C / sqrt(n_g)` also lands in the loss it returns.
        adjusted = q @ (adjustment / counts.sqrt()) if adjustment > 0 else 0.0
        torch.testing.assert_close(loss + adjusted, ref_loss, **TOL, msg=f"loss at step {step}")
    torch.testing.assert_close(method.q, reference.loss_computer.adv_probs, **TOL)
    assert not torch.allclose(method.q, torch.full((n_groups,), 1 / n_groups), atol=1e-3)  # q did move
    theirs = reference.model.state_dict()
    assert list(theirs) == list(method.model.state_dict())
    for name, ours in method.model.state_dict().items():
        torch.testing.assert_close(ours, theirs[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
