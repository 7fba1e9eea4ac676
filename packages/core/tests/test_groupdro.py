"""Group DRO's parts the reference-step test (test_groupdro_reference.py) does not reach:
the authors' defaults and presets, groups missing from a batch or seen once, inferred groups, the
q initialisation and the group-balanced sampling. Written to kill the mutants that survived it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from robust import hookimpl
from robust.data import Batch
from robust.engine import Run
from robust.groupdro import GroupDRO, GroupDROConfig
from robust.resolve import resolve_run_config

from .tiny import TinyConfig, TinyPlugin, load_tiny


def load_tiny_inferred(config: TinyConfig, data_root):
    """tiny whose training groups are inferred: six of them (label x 3 clusters), more than info names."""
    bundle = load_tiny(config, data_root)
    train = bundle.splits["train"]
    groups = 3 * train.labels + torch.arange(len(train.labels)) % 3
    splits = {**bundle.splits, "train": dataclasses.replace(train, groups=groups)}
    info = dataclasses.replace(bundle.info, extra={**bundle.info.extra, "inferred_groups": {"file": "g.csv"}})
    return dataclasses.replace(bundle, splits=splits, info=info)


class InferredPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("tiny-inferred", load_tiny_inferred, config=TinyConfig, default_model="mlp")


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"), register_plugin(InferredPlugin(), "inferred-plugin"):
        yield


def make(tmp_path, dataset="tiny", sets=()) -> GroupDRO:
    resolved = resolve_run_config("groupdro", dataset=dataset, sets=["lr=0.05", *sets], flags={"epochs": 1})
    return Run(resolved, tmp_path / "run", quiet=True).method


def test_defaults_are_the_authors_and_signs_are_checked():
    config = GroupDROConfig()
    assert config.step_size == 0.01 and config.generalization_adjustment == 0.0 and config.reweight_groups is True
    for bad in ({"step_size": 0.0}, {"step_size": -0.5}, {"generalization_adjustment": -0.5}):
        with pytest.raises(ValueError):
            GroupDROConfig(**bad)


@pytest.mark.parametrize(
    ("dataset", "lr", "weight_decay", "batch_size", "epochs"),
    [("waterbirds", 1e-5, 1.0, 128, 300), ("celeba", 1e-5, 0.1, 128, 50)],
)
def test_presets_are_the_group_dro_readme_commands(dataset, lr, weight_decay, batch_size, epochs):
    preset = GroupDRO.presets[dataset]
    assert preset["method"] == {"optimizer": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": weight_decay}
    assert preset["train"] == {"batch_size": batch_size, "epochs": epochs}


def test_q_starts_uniform_and_group_counts_are_not_checkpointed(tmp_path):
    method = make(tmp_path)
    assert torch.equal(method.q, torch.full((4,), 0.25))
    assert "q" in method.state_dict() and "group_counts" not in method.state_dict()
    assert method.group_counts.tolist() == torch.bincount(method.ctx.data.splits["train"].groups, minlength=4).tolist()


def test_inferred_groups_are_counted_from_the_labels_not_the_dataset(tmp_path):
    method = make(tmp_path, "tiny-inferred")
    assert method.num_groups == 6 and torch.equal(method.q, torch.full((6,), 1 / 6))


def test_an_absent_group_keeps_its_weight_share_and_a_single_sample_counts_fully(tmp_path):
    """Batch with group 3 absent and group 2 seen once: hand-computed q update and q-weighted loss."""
    method = make(tmp_path, sets=["step_size=0.5", "generalization_adjustment=1.0"])
    method.group_counts = torch.tensor([40.0, 5.0, 1.0, 0.0])  # a training group of one image, one of none
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=gen)
    y = torch.tensor([0, 0, 1, 1, 1])
    group = torch.tensor([0, 0, 1, 1, 2])
    with torch.no_grad():
        losses = F.cross_entropy(method.model(x), y, reduction="none")
    observed = torch.stack([losses[:2].mean(), losses[2:4].mean(), losses[4], torch.tensor(0.0)])
    adjusted = observed + 1.0 / method.group_counts.clamp_min(1).sqrt()
    q = torch.full((4,), 0.25) * torch.exp(0.5 * adjusted)
    q = q / q.sum()
    logs = method.update(Batch(x=x, y=y, index=torch.arange(5), group=group), 0)
    assert torch.isfinite(method.q).all()
    torch.testing.assert_close(method.q, q)
    torch.testing.assert_close(logs["loss"], (observed * q).sum())
    assert math.isclose(float(logs["worst_group_loss"]), float(observed[:3].max()), rel_tol=1e-6)


def test_worst_group_loss_includes_a_group_seen_once(tmp_path):
    method = make(tmp_path)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 0, 1])
    with torch.no_grad():
        losses = F.cross_entropy(method.model(x), y, reduction="none")
    alone = int(losses.argmax())  # the highest loss alone in its group: the worst group is one image
    group = torch.zeros(3, dtype=torch.long)
    group[alone] = 2
    logs = method.update(Batch(x=x, y=y, index=torch.arange(3), group=group), 0)
    assert math.isclose(float(logs["worst_group_loss"]), float(losses[alone]), rel_tol=1e-5)


def test_reweighted_epochs_draw_every_group_alike_with_replacement(tmp_path):
    method = make(tmp_path, sets=["dataset.n_train=400"])
    groups = method.ctx.data.splits["train"].groups
    draws = torch.cat([method.epoch_indices(e, torch.Generator().manual_seed(e)) for e in range(20)])
    share = torch.bincount(groups[draws], minlength=4).float() / len(draws)
    assert (share - 0.25).abs().max() < 0.03, share  # 1/n_g weights: the groups' sizes are 0.45/0.05/0.05/0.45
    assert len(torch.unique(draws[: len(groups)])) < len(groups)  # with replacement: repeats within an epoch
    method.config.reweight_groups = False
    assert method.epoch_indices(0, torch.Generator()) is None


def test_a_group_of_one_training_image_weighs_as_a_whole_group(tmp_path):
    method = make(tmp_path)
    method._train_groups = torch.tensor([0, 0, 0, 1])
    method.group_counts = torch.tensor([3.0, 1.0, 0.0, 0.0])
    draws = torch.cat([method.epoch_indices(e, torch.Generator().manual_seed(e)) for e in range(500)])
    assert abs(float((draws == 3).float().mean()) - 0.5) < 0.03  # 1/n_g: group 1's single image is half the draws
