"""The label protocol (--train-attr, --val-attr): what a method may see, enforced, and recorded."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from robust.engine import Run
from robust.erm import ERM
from robust.errors import ConfigError
from robust.resolve import resolve_run_config

from .tiny import GroupUser, Recorder, TinyPlugin


class Inspector(Recorder):
    """Records the group labels its view of the dataset holds, per split, and what ctx.batches gives."""

    views: ClassVar[dict[str, bool]] = {}

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        Inspector.views = {name: split.groups is not None for name, split in ctx.data.splits.items()}
        Inspector.views["batches:train"] = next(iter(ctx.batches("train"))).group is not None
        Inspector.views["batches:val"] = next(iter(ctx.batches("val"))).group is not None


class GroupInspector(Inspector):
    uses_group_labels = True


class ValGroupInspector(Inspector):
    uses_val_group_labels = True


class AttributePlugin(TinyPlugin):
    from robust import hookimpl

    @hookimpl
    def register_methods(self, register):
        register("recorder", Recorder)
        register("group-user", GroupUser)
        register("inspector", Inspector)
        register("group-inspector", GroupInspector)
        register("val-group-inspector", ValGroupInspector)


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(AttributePlugin(), "attribute-test-plugin"):
        yield


def run(tmp_path, method: str, **flags):
    flags.setdefault("epochs", 1)
    resolved = resolve_run_config(method, dataset="tiny", sets=["lr=0.05", "train.batch_size=32"], flags=flags)
    return Run(resolved, tmp_path / method, quiet=True).fit()


@pytest.mark.parametrize("train_attr", ["auto", "yes", "no"])
def test_a_group_free_method_never_receives_group_labels(tmp_path, train_attr):
    """Whatever --train-attr says, a method that does not use group labels gets none: not in a training
    batch, not from ctx.batches, not in its view of any split."""
    Recorder.seen_groups.clear()
    summary = run(tmp_path, "inspector", train_attr=train_attr)
    assert len(Recorder.seen_groups) == 3 and not any(Recorder.seen_groups)
    assert not any(Inspector.views.values()), Inspector.views
    assert summary["protocol"]["train_group_labels"] is False
    assert summary["protocol"]["train_attr"] == train_attr


def test_a_group_method_is_refused_when_the_protocol_withholds_groups(tmp_path):
    with pytest.raises(ConfigError, match="--train-attr no withholds them"):
        run(tmp_path, "group-user", train_attr="no")


def test_a_group_method_gets_train_and_val_groups_but_never_test(tmp_path):
    Recorder.seen_groups.clear()
    summary = run(tmp_path, "group-inspector")
    assert Recorder.seen_groups and all(Recorder.seen_groups)
    assert Inspector.views == {"train": True, "val": True, "test": False, "batches:train": True, "batches:val": True}
    assert summary["protocol"] | {"inferred_groups": None} == {
        "train_attr": "auto",
        "val_attr": "yes",
        "train_group_labels": True,
        "val_group_labels": True,
        "val_groups_to_method": True,
        "val_used_for_training": False,
        "inferred_groups": None,
    }
    assert summary["default_selection"] == "best_val_worst_group"


@pytest.mark.parametrize("train_attr", ["auto", "no"])
def test_a_method_that_reads_val_groups_only_gets_them_and_no_training_groups(tmp_path, train_attr):
    """DFR's protocol: val's groups (its balanced held-out set), none of the training data's."""
    Recorder.seen_groups.clear()
    summary = run(tmp_path, "val-group-inspector", train_attr=train_attr)
    assert Recorder.seen_groups and not any(Recorder.seen_groups)
    assert Inspector.views == {"train": False, "val": True, "test": False, "batches:train": False, "batches:val": True}
    assert summary["protocol"]["train_group_labels"] is False and summary["protocol"]["val_group_labels"] is True
    assert summary["protocol"]["val_groups_to_method"] is True
    assert run(tmp_path / "erm", "inspector", train_attr=train_attr)["protocol"]["val_groups_to_method"] is False
    run(tmp_path / "withheld", "val-group-inspector", val_attr="no")
    assert Inspector.views["val"] is False and Inspector.views["batches:val"] is False


def test_without_val_groups_selection_is_by_worst_class(tmp_path):
    """--val-attr no: val groups are gone for the method and for selection; test keeps its groups."""
    summary = run(tmp_path, "group-inspector", val_attr="no", epochs=2)
    assert Inspector.views["val"] is False and Inspector.views["batches:val"] is False
    assert Inspector.views["train"] is True
    assert summary["protocol"]["val_group_labels"] is False and summary["protocol"]["val_attr"] == "no"
    assert "best_val_worst_group" not in summary["selection"]
    assert summary["default_selection"] == "best_val_worst_class"
    chosen = summary["selection"]["best_val_worst_class"]["metrics"]
    assert "val/worst_group_acc" not in chosen and "test/worst_group_acc" in chosen


def test_protocol_options_are_config_keys(tmp_path):
    resolved = resolve_run_config("erm", dataset="tiny", sets=["train_attr=no", "val_attr=no"])
    assert (resolved.config.train_attr, resolved.config.val_attr) == ("no", "no")
    with pytest.raises(ConfigError):
        resolve_run_config("erm", dataset="tiny", sets=["val_attr=maybe"])


def test_group_agreement_scores_without_handing_out_groups(tmp_path):
    """ctx.group_agreement: the engine scores an assignment against the true groups it withholds."""
    scores = {}

    class Scorer(ERM):
        def __init__(self, config, ctx):
            super().__init__(config, ctx)
            assert ctx.data.splits["train"].groups is None
            truth = run_ctx_groups()
            scores["exact"] = ctx.group_agreement(truth)
            scores["one"] = ctx.group_agreement(torch.zeros_like(truth))

    def run_ctx_groups():
        from .tiny import TinyConfig, load_tiny

        return load_tiny(TinyConfig(), None).splits["train"].groups

    from robust import hookimpl
    from robust.plugins import pm
    from robust.registry import reset_registry

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("scorer", Scorer)

    pm.register(Plugin(), "scorer-plugin")
    reset_registry()
    try:
        run(tmp_path, "scorer")
    finally:
        pm.unregister(name="scorer-plugin")
        reset_registry()
    assert scores["exact"]["ari"] == pytest.approx(1.0) and scores["exact"]["worst_group_recall"] == 1.0
    assert scores["one"]["ari"] == pytest.approx(0.0) and scores["one"]["worst_group_recall"] == 0.0
