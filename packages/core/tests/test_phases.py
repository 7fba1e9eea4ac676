"""What a Phase carries (its optimizers and schedules, epoch order, epoch end, prediction), run phases
(no_grad, eval mode, recorded results), the declared classifier, and the engine's gradient averager."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

from robust.api import ERM, Method, Phase, hookimpl, trained_weights
from robust.testing import registered, tiny_run


class TwoOptimizers(ERM):
    """Phase a trains optimizer a, phase b optimizer b; both schedules exist from the start."""

    seen: ClassVar[dict] = {}

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.remove_optimizer("model")
        self.head_b = torch.nn.Linear(2, 2)
        for name, params in (("a", self.model.parameters()), ("b", self.head_b.parameters())):
            optimizer = torch.optim.SGD(params, lr=1.0)
            self.add_optimizer(
                name, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5), interval="step"
            )

    def phases(self):
        return [
            Phase("a", epochs=1, optimizers=("a",), update=self.step_a, on_epoch_end=self.end_a),
            Phase("look", run=self.look),
            Phase("b", epochs=1, optimizers=("b",), epoch_indices=self.first_ten, predict=self.predict_b),
        ]

    def step_a(self, batch, step):
        loss = self.loss(self.model(batch.x), batch.y).mean()
        self.optimize(loss)  # the phase's optimizer: a
        return {"loss": loss.detach()}

    def update(self, batch, step):  # phase b
        TwoOptimizers.seen.setdefault("b_indices", []).extend(batch.index.tolist())
        loss = self.loss(self.head_b(self.model(batch.x)), batch.y).mean()
        self.optimize(loss)  # the phase's optimizer: b
        return {"loss": loss.detach()}

    def end_a(self, epoch):
        TwoOptimizers.seen["lr_b_after_a"] = self.optimizers["b"].param_groups[0]["lr"]
        TwoOptimizers.seen["lr_a_after_a"] = self.optimizers["a"].param_groups[0]["lr"]

    def look(self):
        TwoOptimizers.seen["look"] = (torch.is_grad_enabled(), self.training)
        return {"answer": torch.tensor(42.0), "sizes": torch.tensor([1, 2])}

    def first_ten(self, epoch, generator):
        return torch.arange(10)

    def predict_b(self, x):
        TwoOptimizers.seen["predicted_by_b"] = True
        return self.head_b(self.model(x))

    def on_epoch_end(self, epoch):
        TwoOptimizers.seen["method_epoch_end"] = TwoOptimizers.seen.get("method_epoch_end", 0) + 1


class ElsewhereClassifier(ERM):
    """A method whose classifier is not the attribute ``model``."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.net = self.model
        del self.model
        self.remove_optimizer("model")
        self.add_optimizer("net", torch.optim.SGD(self.net.parameters(), lr=0.1))

    @property
    def classifier(self):
        return self.net

    def update(self, batch, step):
        loss = self.loss(self.net(batch.x), batch.y).mean()
        self.optimize(loss)
        return {"loss": loss.detach()}

    def predict(self, x):
        return self.net(x)


class Methods:
    @hookimpl
    def register_methods(self, register):
        register("two-optimizers", TwoOptimizers)
        register("elsewhere", ElsewhereClassifier)


@pytest.fixture(autouse=True)
def methods():
    TwoOptimizers.seen = {}
    with registered(Methods(), "phase-test-methods"):
        yield


def test_a_phase_trains_and_schedules_only_its_own_optimizers(tmp_path):
    summary = tiny_run("two-optimizers", tmp_path / "run", sets=["train.batch_size=32"])
    seen = TwoOptimizers.seen
    assert seen["lr_a_after_a"] == pytest.approx(0.5**3)  # 96 samples / 32: three steps of a
    assert seen["lr_b_after_a"] == 1.0  # b's schedule did not move during phase a
    assert seen["method_epoch_end"] == 1  # phase a had its own epoch end; b used the method's
    assert sorted(seen["b_indices"]) == list(range(10))  # phase b's own epoch order
    assert seen["predicted_by_b"]  # evaluation during phase b used its predict
    assert summary["phase_results"] == {"look": {"answer": 42.0, "sizes": [1, 2]}}


def test_a_run_phase_runs_without_gradients_in_eval_mode_and_its_result_is_in_the_history(tmp_path):
    from robust.api import RunDir

    tiny_run("two-optimizers", tmp_path / "run")
    assert TwoOptimizers.seen["look"] == (False, False)
    from robust.results import read_history

    history = read_history(RunDir(tmp_path / "run").history_path)
    rows = [i for i, phase in enumerate(history["phase"]) if phase == "look"]
    assert len(rows) == 1 and history["look/answer"][rows[0]] == 42.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["phase_results"]["look"]["answer"] == 42.0


def test_the_declared_classifier_is_what_checkpoints_keep_and_other_runs_start_from(tmp_path):
    tiny_run("elsewhere", tmp_path / "first")
    _, weights = trained_weights(tmp_path / "first")
    assert weights and not any(k.startswith("net.") for k in weights)  # the classifier's own keys
    summary = tiny_run("elsewhere", tmp_path / "second", sets=[f"train.init_from={tmp_path / 'first'}"])
    assert summary["selection"]


def test_gradient_averaging_belongs_to_the_engine_not_the_method(tmp_path):
    assert not hasattr(Method, "batch_share")
    from robust.api import distributed

    averager = distributed.GradientAverager()
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    averager.attach(optimizer)
    parameter.grad = torch.ones(2)
    averager.average([optimizer])
    optimizer.step()  # one process: averaging changes nothing, and the pre-hook does not average twice
    assert parameter.detach().tolist() == [0.0, 0.0]
    averager.end_step()
    assert averager._averaged == set()


def test_the_progress_total_follows_a_phase_epoch_order(tmp_path, monkeypatch):
    """Phase b's epochs have 10 samples, not 96: its bar counts 1 batch per epoch, not 3."""
    from rich.progress import Progress

    totals = {}
    update = Progress.update

    def record(self, task, **fields):
        if "total" in fields:
            totals[task] = fields["total"]
        return update(self, task, **fields)

    monkeypatch.setattr(Progress, "update", record)
    tiny_run("two-optimizers", tmp_path / "run", sets=["train.batch_size=32"])
    assert list(totals.values()) == [1]  # phase b only (a and its 3 batches kept the split's count)
