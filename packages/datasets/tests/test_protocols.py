"""Subsampling, long tail, meta set and label noise on any registered dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydantic
import pytest
import torch

from robust import hookimpl
from robust.data import ArraySplit, DatasetBundle, StreamSplit, SubsetSplit, subset_split
from robust.datasets import load_dataset
from robust.errors import ConfigError
from robust.fraction import FractionOptions, keep_fraction, stratified_fraction
from robust.resolve import resolve_run_config
from robust.testing import TinyConfig, TinyDatasetPlugin, load_tiny
from robust_datasets.long_tail_noise import ClassProtocolOptions, apply_class_protocol


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


def bundle(n_train: int = 96) -> DatasetBundle:
    return load_tiny(TinyConfig(n_train=n_train), None)


def test_frac_keeps_a_share_of_every_group_in_every_split():
    data = bundle(400)
    out = keep_fraction(data, FractionOptions(frac=0.25))
    for name, split in out.splits.items():
        before = torch.bincount(data.splits[name].groups, minlength=4)
        after = torch.bincount(split.groups, minlength=4)
        expected = torch.clamp(torch.round(before.float() * 0.25), min=1) * (before > 0)
        assert torch.equal(after, expected.long()), name
    assert stratified_fraction(np.array([0, 0, 1]), 0.01, 0).tolist() in ([0, 2], [1, 2])  # at least 1 each


def test_meta_set_then_long_tail_then_noise_on_the_training_split():
    data = bundle(400)
    out = apply_class_protocol(
        data, ClassProtocolOptions(meta_per_class=10, imb_factor=4, noise="unif", noise_ratio=0.5)
    )
    meta = out.aux["meta"]
    assert torch.bincount(meta.labels, minlength=2).tolist() == [10, 10]
    counts = out.info.extra["protocol_train_counts"]
    n_max = int(torch.bincount(data.splits["train"].labels).min()) - 10
    assert counts == [n_max, int(n_max / 4)]
    assert 0.1 < out.info.extra["protocol_noise_rate"] < 0.4  # unif 0.5 over 2 classes: 0.25 expected
    assert len(out.splits["val"]) == len(data.splits["val"])  # evaluation splits untouched
    assert out.info.extra["dataset_transforms"] == {
        "meta_per_class": 10,
        "imb_factor": 4.0,
        "noise": "unif",
        "noise_ratio": 0.5,
    }


def test_streamed_splits_are_subset_by_view():
    class Streamed(StreamSplit):
        def __init__(self, split: ArraySplit) -> None:
            super().__init__(labels=split.labels, groups=split.groups, bias=split.bias)
            self.images = split.images

        def read(self, index: int):
            return self.images[index], None

    array = bundle().splits["train"]
    view = subset_split(Streamed(array), torch.tensor([5, 2]))
    assert isinstance(view, SubsetSplit) and view.labels.tolist() == array.labels[[5, 2]].tolist()
    assert torch.equal(view.read(1)[0], array.images[2])


def test_protocol_options_through_resolve_and_loading(tmp_path):
    config = resolve_run_config("erm", dataset="tiny", sets=["dataset.frac=0.5", "dataset.imb_factor=2"]).config
    assert config.dataset == {"name": "tiny", "n_train": 96, "spurious": 0.9, "frac": 0.5, "imb_factor": 2.0}
    data = load_dataset("tiny", {"frac": 0.5})
    assert len(data.splits["train"]) < 96
    with pytest.raises(ConfigError, match="dataset transforms"):
        resolve_run_config("erm", dataset="tiny", sets=["dataset.fraction=0.5"])
    with pytest.raises(ConfigError, match="frac"):
        resolve_run_config("erm", dataset="tiny", sets=["dataset.frac=2"])


def test_a_meta_set_alone_keeps_every_other_training_image():
    data = bundle(400)
    out = apply_class_protocol(data, ClassProtocolOptions(meta_per_class=10))
    before = torch.bincount(data.splits["train"].labels, minlength=2)
    after = torch.bincount(out.splits["train"].labels, minlength=2)
    assert torch.equal(after, before - 10)  # classes stay as unbalanced as they were
    assert len(out.aux["meta"]) == 20


# -- dataset transforms registered by plugins ------------------------------------------------


class BrightenOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    brighten_by: int = pydantic.Field(0, ge=0, le=255)
    brighten_class: int = 0


def brighten(data: DatasetBundle, options: BrightenOptions) -> DatasetBundle:
    train = data.splits["train"]
    images = train.images.clone()
    chosen = train.labels == options.brighten_class
    images[chosen] = (images[chosen].int() + options.brighten_by).clamp(max=255).to(torch.uint8)
    splits = {**data.splits, "train": dataclasses.replace(train, images=images)}
    return dataclasses.replace(data, splits=splits)


class TransformPlugin:
    @hookimpl
    def register_dataset_transforms(self, register):
        register("brighten", brighten, config=BrightenOptions, description="add to one class's pixels")


def test_a_registered_transform_applies_to_any_dataset_through_its_options(register_plugin):
    with register_plugin(TransformPlugin(), "transform-test-plugin"):
        config = resolve_run_config("erm", dataset="tiny", sets=["dataset.brighten_by=7", "dataset.frac=0.5"]).config
        assert config.dataset["brighten_by"] == 7 and config.dataset["frac"] == 0.5
        plain, bright = load_dataset("tiny"), load_dataset("tiny", {"brighten_by": 7})
        before, after = plain.splits["train"], bright.splits["train"]
        zero = before.labels == 0
        assert torch.equal(after.images[~zero], before.images[~zero])
        assert (after.images[zero].int() - before.images[zero].int()).max() == 7
        assert torch.equal(bright.splits["test"].images, plain.splits["test"].images)
        with pytest.raises(ConfigError, match="brighten"):
            resolve_run_config("erm", dataset="tiny", sets=["dataset.brighten_by=300"])
    with pytest.raises(ConfigError, match="dataset transforms"):  # the plugin gone, the option is unknown
        resolve_run_config("erm", dataset="tiny", sets=["dataset.brighten_by=7"])
