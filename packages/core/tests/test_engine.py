"""The engine on a tiny in-memory dataset: run directory, resume, errors, protocol, phases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robust.api import Classifier, hookimpl
from robust.checkpoint import load_checkpoint
from robust.engine import Run
from robust.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirError
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust.testing import Crash, CrashAt

from .tiny import Recorder, TinyPlugin


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


def make_run(out: Path, method: str = "erm", sets=(), resume: bool = False, **flags) -> Run:
    flags.setdefault("epochs", 3)
    resolved = resolve_run_config(method, dataset="tiny", sets=["lr=0.05", *sets], flags=flags)
    return Run(resolved, out, resume=resume, quiet=True)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / "last.pt")["method"]["modules"]


def test_run_directory_contents(tmp_path):
    summary = make_run(tmp_path / "run").fit()
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"]["name"] == "erm" and config["method"]["lr"] == 0.05
    assert "torch" in config["versions"]
    history = read_history(run_dir / "history.h5")
    assert list(history["epoch"]) == [1, 2, 3]
    assert len(history["val/worst_group_acc"]) == 3
    assert set(summary["selection"]) >= {"best_val_worst_group", "best_val_avg", "last", "oracle_test"}
    assert summary["default_selection"] == "best_val_worst_group"
    best = summary["selection"]["best_val_worst_group"]
    assert best["metrics"]["val/worst_group_acc"] == max(history["val/worst_group_acc"])
    assert summary["selection"]["last"]["epoch"] == 3
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert (run_dir / "checkpoints" / "best_val_worst_group.pt").is_file()


def test_two_runs_into_one_directory_are_refused(tmp_path):
    make_run(tmp_path / "run", epochs=1).fit()
    with pytest.raises(RunDirError, match="already exists"):
        make_run(tmp_path / "run", epochs=1)


STEP_CHECKPOINTS = ("train.batch_size=32", "train.eval_every_steps=1", "train.checkpoint_every_steps=1")


@pytest.mark.parametrize(("sets", "crash_at"), [((), 3), (STEP_CHECKPOINTS, 5)])
def test_resume_equals_uninterrupted(tmp_path, register_plugin, sets, crash_at):
    """Killed at an evaluation (after epoch ends, or mid-epoch with step checkpoints), resumed:
    the same weights and metrics as a run that was never interrupted (deterministic CPU)."""
    full = make_run(tmp_path / "full", sets=sets, seed=3).fit()
    with register_plugin(CrashAt(evaluation=crash_at), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", sets=sets, seed=3).fit()
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    if sets:
        assert ckpt["engine"]["batch"] > 0, "the crash should leave a mid-epoch checkpoint"
    resumed = make_run(tmp_path / "cut", sets=sets, seed=3, resume=True).fit()
    for key, value in final_weights(tmp_path / "full").items():
        assert torch.equal(value, final_weights(tmp_path / "cut")[key]), key
    for rule in ("best_val_worst_group", "last"):
        assert resumed["selection"][rule]["metrics"] == full["selection"][rule]["metrics"]
        assert resumed["selection"][rule]["step"] == full["selection"][rule]["step"]


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    run = make_run(tmp_path / "run", method="nan-after", epochs=5, sets=["train.batch_size=32", "train.log_every=1"])
    with pytest.raises(NonFiniteLossError, match="non-finite") as info:
        run.fit()
    assert "last good checkpoint" in str(info.value)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["engine"]["epoch"] == 1  # 3 steps an epoch: NaN at step 5 is in epoch 2
    assert all(torch.isfinite(v).all() for v in ckpt["method"]["modules"].values() if v.is_floating_point())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, register_plugin):
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "run").fit()
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        make_run(tmp_path / "run", resume=True)


def test_group_labels_are_withheld_unless_the_method_uses_them(tmp_path):
    Recorder.seen_groups.clear()
    make_run(tmp_path / "a", method="recorder", epochs=1).fit()
    assert Recorder.seen_groups and not any(Recorder.seen_groups)
    Recorder.seen_groups.clear()
    make_run(tmp_path / "b", method="group-user", epochs=1).fit()
    assert Recorder.seen_groups and all(Recorder.seen_groups)


def test_batches_carry_indices_covering_the_epoch(tmp_path):
    Recorder.seen_indices.clear()
    make_run(tmp_path / "a", method="recorder", epochs=1, sets=["train.batch_size=32"]).fit()
    seen = torch.cat(Recorder.seen_indices)
    assert sorted(seen.tolist()) == list(range(96))
    assert seen.tolist() != list(range(96)), "training order should be shuffled"


def test_phases_run_in_order_and_resume(tmp_path, register_plugin):
    summary = make_run(tmp_path / "full", method="two-phase").fit()
    history = read_history(tmp_path / "full" / "history.h5")
    assert list(history["phase"]) == ["warmup", "warmup", "finetune", "finetune"]
    assert summary["train"]["steps"] == 8  # 2 + 2 epochs of 2 batches
    with register_plugin(CrashAt(evaluation=3), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", method="two-phase").fit()
    run = make_run(tmp_path / "cut", method="two-phase", resume=True)
    run.fit()
    assert run.method.analysis_runs == 0, "the finished analysis phase is not run again"
    full, cut = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert torch.equal(full["feature_mean"], cut["feature_mean"])
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_plateau_schedule_follows_the_validation_loss(tmp_path):
    """schedule=plateau (CFGen's Waterbirds recipe): ERM steps ReduceLROnPlateau with val/loss."""
    summary = make_run(tmp_path / "run", sets=["schedule=plateau", "patience=0", "gamma=0.5"], epochs=4).fit()
    history = read_history(tmp_path / "run" / "history.h5")
    losses = list(history["val/loss"])
    lrs = list(history["train/lr_model"])
    assert all(loss > 0 for loss in losses) and summary["train"]["steps"] > 0
    # With patience 0, the lr halves after every evaluation whose val loss is not a new best.
    expected, best, lr = [], float("inf"), 0.05
    for loss in losses:
        expected.append(lr)  # logged before this evaluation's step
        if loss < best * (1 - 1e-4):
            best = loss
        else:
            lr *= 0.5
    assert lrs == pytest.approx(expected)


def test_a_method_can_turn_amp_off_by_default(tmp_path, register_plugin, monkeypatch):
    """train.amp=auto asks the method first (CFGen's double backprop needs full precision)."""
    import robust.engine
    from robust import hookimpl
    from robust.erm import ERM

    class NeedsFullPrecision(ERM):
        @classmethod
        def default_amp(cls, config):
            return "off"

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("full-precision", NeedsFullPrecision)

    asked = []
    real = robust.engine.resolve_precision
    monkeypatch.setattr(robust.engine, "resolve_precision", lambda amp, device: asked.append(amp) or real(amp, device))
    with register_plugin(Plugin(), "full-precision-plugin"):
        make_run(tmp_path / "a", method="full-precision", epochs=1)
        make_run(tmp_path / "b", method="full-precision", sets=["train.amp=bf16"], epochs=1)
        make_run(tmp_path / "c", epochs=1)
    assert asked == ["off", "bf16", "auto"]


def test_datasets_can_ask_for_auc_and_derived_metrics(tmp_path, register_plugin):
    from dataclasses import replace

    from robust import hookimpl

    from .tiny import TinyConfig, load_tiny

    def load(config, root):
        bundle = load_tiny(TinyConfig(), root)
        bundle.info = replace(bundle.info, auc=True, derived_metrics={"test/gap": ["val/avg_acc", "test/avg_acc"]})
        return bundle

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("tiny-auc", load, description="tiny with AUC", default_model="mlp")

    with register_plugin(Plugin(), "tiny-auc-plugin"):
        resolved = resolve_run_config("erm", dataset="tiny-auc", sets=["lr=0.05"], flags={"epochs": 2})
        summary = Run(resolved, tmp_path / "run", quiet=True).fit()
    assert summary["default_selection"] == "best_val_auc"
    metrics = summary["selection"]["best_val_auc"]["metrics"]
    assert 0 <= metrics["val/macro_auc"] <= 1 and "test/macro_auc" in metrics
    assert metrics["test/gap"] == pytest.approx(metrics["val/avg_acc"] - metrics["test/avg_acc"])


# -- issue 18: reruns lose nothing, interrupted epochs keep their history, leftovers go ----------


def rerun_run(out: Path, phase: str, method: str = "two-phase", sets=()) -> Run:
    from robust.results import RunDir

    base = RunDir(out).read_config()
    resolved = resolve_run_config(method, sets=list(sets), flags={}, base=base)
    return Run(resolved, out, rerun=phase, quiet=True)


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def results_of(out: Path) -> dict[str, bytes]:
    """The files that hold a run's results (the lock's files aside)."""
    return {k: v for k, v in snapshot(out).items() if not k.startswith(".run.")}


def test_rerun_of_a_misspelt_phase_changes_nothing(tmp_path):
    make_run(tmp_path / "run", method="two-phase").fit()
    before = results_of(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"no phase 'finetun'.*Nothing in the run directory was changed"):
        rerun_run(tmp_path / "run", "finetun").fit()
    assert results_of(tmp_path / "run") == before, "summary.json and the best checkpoints are kept"


def test_rerun_with_a_damaged_phase_checkpoint_changes_nothing(tmp_path):
    make_run(tmp_path / "run", method="two-phase").fit()
    (tmp_path / "run" / "checkpoints" / "phase-analyse.pt").write_bytes(b"truncated")
    before = results_of(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"phase-analyse\.pt"):
        rerun_run(tmp_path / "run", "finetune").fit()
    assert results_of(tmp_path / "run") == before


def test_a_rerun_that_fails_before_its_first_checkpoint_gives_the_run_back(tmp_path, register_plugin):
    make_run(tmp_path / "run", method="two-phase").fit()
    before = results_of(tmp_path / "run")
    with register_plugin(CrashAt(evaluation=1), "crash"), pytest.raises(Crash):  # after history and best writes
        rerun_run(tmp_path / "run", "finetune", sets=["lr=0.01"]).fit()
    assert results_of(tmp_path / "run") == before


def test_an_interrupted_rerun_resumes_then_drops_what_it_replaced(tmp_path, register_plugin):
    make_run(tmp_path / "run", method="two-phase").fit()
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):  # after a checkpoint
        rerun_run(tmp_path / "run", "finetune", sets=["lr=0.01"]).fit()
    run = tmp_path / "run"
    assert not (run / "summary.json").exists() and (run / ".rerun-backup").is_dir()
    assert json.loads((run / "config.json").read_text())["method"]["lr"] == 0.01
    resolved = resolve_run_config("two-phase", flags={}, base=json.loads((run / "config.json").read_text()))
    Run(resolved, run, resume=True, quiet=True).fit()
    assert (run / "summary.json").is_file() and not (run / ".rerun-backup").exists()


def test_a_rerun_killed_before_it_checkpointed_is_undone_at_the_next_start(tmp_path):
    from robust.results import RunDir

    make_run(tmp_path / "run", method="two-phase").fit()
    before = results_of(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    RunDir(tmp_path / "run").begin_rerun({**config, "method": {**config["method"], "lr": 0.01}})  # then SIGKILL
    assert not (tmp_path / "run" / "summary.json").exists()
    with pytest.raises(RunDirError, match=r"stopped before its first checkpoint.*nothing to resume"):
        make_run(tmp_path / "run", method="two-phase", resume=True)
    assert results_of(tmp_path / "run") == before


class CrashAtStep(Recorder):
    """ERM that raises :class:`Crash` at a chosen step (mid-epoch), once."""

    at: int | None = None

    def update(self, batch, step):
        if step == CrashAtStep.at:
            CrashAtStep.at = None
            raise Crash
        return super().update(batch, step)


@pytest.fixture
def crash_at_step(register_plugin):
    from robust import hookimpl

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("crash-at-step", CrashAtStep)

    with register_plugin(Plugin(), "crash-at-step-plugin"):
        yield


def assert_same_history(a: Path, b: Path) -> None:
    import numpy as np

    full, cut = read_history(a / "history.h5"), read_history(b / "history.h5")
    assert full.keys() == cut.keys()
    for key, column in full.items():
        assert np.array_equal(column, cut[key]), key


@pytest.mark.parametrize("crash_step", [4, 5])
def test_history_after_a_mid_epoch_resume_equals_uninterrupted(tmp_path, crash_at_step, crash_step):
    """train/loss of the interrupted epoch averages all its steps: the running sums are checkpointed
    (they were lost, and the epoch's mean covered the steps after the resume only)."""
    sets = ("train.batch_size=32", "train.checkpoint_every_steps=1")  # 3 steps an epoch, evaluated at its end
    make_run(tmp_path / "full", method="crash-at-step", sets=sets, seed=3).fit()
    CrashAtStep.at = crash_step
    with pytest.raises(Crash):
        make_run(tmp_path / "cut", method="crash-at-step", sets=sets, seed=3).fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["engine"]["batch"] > 0
    make_run(tmp_path / "cut", method="crash-at-step", sets=sets, seed=3, resume=True).fit()
    assert_same_history(tmp_path / "full", tmp_path / "cut")
    for key, value in final_weights(tmp_path / "full").items():
        assert torch.equal(value, final_weights(tmp_path / "cut")[key]), key


def test_a_run_that_died_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    make_run(tmp_path / "full", seed=3).fit()
    died = make_run(tmp_path / "cut", seed=3)  # config.json written, then the process died
    died.release()
    assert not (tmp_path / "cut" / "checkpoints").exists()
    summary = make_run(tmp_path / "cut", seed=3, resume=True).fit()
    assert (
        summary["selection"]["last"]["metrics"]
        == json.loads((tmp_path / "full" / "summary.json").read_text())["selection"]["last"]["metrics"]
    )
    assert_same_history(tmp_path / "full", tmp_path / "cut")


def test_temporary_files_of_killed_writes_are_removed_on_the_next_start(tmp_path, register_plugin):
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "run").fit()
    leftovers = [tmp_path / "run" / "checkpoints" / ".last.pt.k3j2.tmp", tmp_path / "run" / ".history.h5.a1b2.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    unrelated = tmp_path / "run" / "notes.tmp"  # not a name our writes use: kept
    unrelated.write_text("mine")
    make_run(tmp_path / "run", resume=True).fit()
    assert not any(path.exists() for path in leftovers) and unrelated.exists()


def cnn_run(out: Path, channels_last: bool) -> Run:
    sets = ["lr=0.05", f"train.channels_last={channels_last}"]
    resolved = resolve_run_config("erm", dataset="tiny", model="cnn", sets=sets, flags={"steps": 4})
    return Run(resolved, out, quiet=True)


@pytest.mark.parametrize("channels_last", [True, False])
def test_conv_weights_are_channels_last_unless_switched_off(tmp_path, channels_last):
    """train.channels_last (on by default) lays every convolution weight out channels-last: the engine's
    models and any a method builds through the context; off, the default layout. Training is the same
    computation either way (equal to float rounding)."""
    run = cnn_run(tmp_path / "run", channels_last)
    extra = run.method.ctx.build_model()
    for model in (run.method.model, extra):
        convs = [p for p in model.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in convs)
        assert all(p.is_contiguous() != channels_last for p in convs if p.shape[1] > 1)
    run.fit()
    assert run.method.model.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_channels_last_trains_the_same_model(tmp_path):
    weights = {}
    for flag in (True, False):
        cnn_run(tmp_path / str(flag), flag).fit()
        weights[flag] = final_weights(tmp_path / str(flag))
    assert weights[True].keys() == weights[False].keys()
    for name, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][name], rtol=1e-4, atol=1e-5, msg=name)


class ViewEncoder(nn.Module):
    """A hand-written encoder that flattens a convolution's map with .view (NCHW-contiguous only)."""

    def __init__(self, input_shape):
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], 4, 3, padding=1)
        self.dim = 4 * input_shape[1] * input_shape[2]

    def forward(self, x):
        h = self.conv(x)
        return h.view(h.size(0), -1)


def build_view_model(config, num_classes, input_shape):
    encoder = ViewEncoder(input_shape)
    return Classifier(encoder, encoder.dim, num_classes)


class ViewModelPlugin:
    @hookimpl
    def register_models(self, register):
        register("view-cnn", build_view_model, description="flattens with .view")


def test_a_model_that_views_its_conv_maps_keeps_the_default_layout_with_a_note(tmp_path, register_plugin, capsys):
    with register_plugin(ViewModelPlugin(), "view-model"):
        resolved = resolve_run_config("erm", dataset="tiny", model="view-cnn", sets=["lr=0.05"], flags={"steps": 3})
        run = Run(resolved, tmp_path / "run")
        conv = run.method.model.encoder.conv.weight
        assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
        assert run.method.model.training  # the probe's eval mode is undone
        assert "reshapes activations with .view" in " ".join(capsys.readouterr().err.split())
        assert run.fit()["train"]["steps"] == 3
