"""Fidelity guards: a method that needs masks runs with them, refuses without them, or records the
user's explicit opt-out, which robust report marks and never compares with the paper."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from pydantic import Field
from robust_counterfactual.fidelity import ALLOW_NO_MASKS_HELP, require_foreground, split_has_foreground
from robust_counterfactual.masks import ProviderMaskedSplit
from robust_report.aggregate import aggregate, find_summaries
from robust_report.comparison import compare_with_papers
from robust_report.render import render

from robust import hookimpl
from robust.data import StreamSplit
from robust.engine import Run
from robust.erm import ERM, ERMConfig
from robust.errors import ConfigError
from robust.papers import PaperResult
from robust.resolve import resolve_run_config
from robust.testing import TinyConfig, TinyDatasetPlugin, load_tiny


class NeedsMasksConfig(ERMConfig):
    allow_no_masks: bool = Field(False, description=ALLOW_NO_MASKS_HELP)


class NeedsMasks(ERM):
    """ERM whose 'paper' needs the foreground of the training set."""

    Config = NeedsMasksConfig

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.masked = require_foreground(
            ctx,
            method="needs-masks",
            needs="its saliency term",
            splits={"training set": ctx.data.splits["train"]},
            allow_no_masks=config.allow_no_masks,
        )


def load_tiny_without_masks(config: TinyConfig, data_root):
    bundle = load_tiny(config, data_root)
    splits = {k: dataclasses.replace(s, masks=None, bboxes=None) for k, s in bundle.splits.items()}
    return dataclasses.replace(bundle, splits=splits)


def top_half(images):
    masks = torch.zeros(len(images), 1, *images.shape[2:], dtype=torch.uint8)
    masks[:, :, : images.shape[2] // 2] = 255
    return masks


class FidelityPlugin:
    @hookimpl
    def register_methods(self, register):
        register("needs-masks", NeedsMasks)

    @hookimpl
    def register_datasets(self, register):
        register("tiny-nomask", load_tiny_without_masks, config=TinyConfig, default_model="mlp")

    @hookimpl
    def register_mask_providers(self, register):
        register("top-half", top_half)


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"), register_plugin(FidelityPlugin(), "fidelity-plugin"):
        yield


def make_run(out: Path, dataset: str, sets=()) -> Run:
    resolved = resolve_run_config("needs-masks", dataset=dataset, sets=["lr=0.05", *sets], flags={"epochs": 1})
    return Run(resolved, out, quiet=True)


def test_with_masks_the_run_is_the_method_and_records_no_opt_out(tmp_path):
    run = make_run(tmp_path / "run", "tiny")
    assert run.method.masked
    assert run.fit()["opt_outs"] == []


def test_without_masks_the_run_is_refused_with_the_three_ways_forward(tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_run(tmp_path / "run", "tiny-nomask")
    message = str(caught.value)
    assert "training set of dataset 'tiny-nomask' has none" in message
    assert "dataset.mask_provider=NAME" in message and "allow_no_masks=true" in message
    assert "its saliency term" in message
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_mask_provider_gives_the_masks(tmp_path):
    run = make_run(tmp_path / "run", "tiny-nomask", ["dataset.mask_provider=top-half"])
    assert run.method.masked
    assert run.fit()["opt_outs"] == []


def test_the_opt_out_is_recorded_marked_and_never_compared_with_the_paper(tmp_path):
    for seed in (0, 1):
        run = make_run(tmp_path / f"opt-out-{seed}", "tiny-nomask", ["allow_no_masks=true", f"seed={seed}"])
        assert not run.method.masked
        run.fit()
    summary = json.loads((tmp_path / "opt-out-0" / "summary.json").read_text())
    assert summary["opt_outs"] == [
        {
            "option": "allow_no_masks",
            "detail": "no foreground masks in the training set of 'tiny-nomask': its saliency term off",
        }
    ]
    make_run(tmp_path / "full", "tiny-nomask", ["dataset.mask_provider=top-half"]).fit()
    rows = aggregate(find_summaries([tmp_path]))
    by_variant = {r.variant: r for r in rows}
    assert set(by_variant) == {"opt-out allow_no_masks", "mask_provider=top-half"}  # never mixed in one row
    reduced = by_variant["opt-out allow_no_masks"]
    assert reduced.opt_outs and len(reduced.seeds) == 2
    assert "opt-out allow_no_masks" in render(rows, ["test/avg_acc"], "markdown")
    paper = PaperResult("needs-masks", "tiny-nomask", "test/avg_acc", 0.9, "Table 1", "last")
    records = {r["variant"]: r for r in compare_with_papers(rows, [paper])}
    assert records["opt-out allow_no_masks"]["paper"] is None
    assert "not compared with the paper" in records["opt-out allow_no_masks"]["note"]
    assert "allow_no_masks" in records["opt-out allow_no_masks"]["note"]
    assert records["mask_provider=top-half"]["paper"]["value"] == 0.9


class Stream(StreamSplit):
    """A streamed split whose images have a mask when ``with_masks``."""

    def __init__(self, n: int, with_masks: bool, bboxes: bool = False) -> None:
        self.labels = torch.zeros(n, dtype=torch.long)
        self.groups = self.bias = None
        self.bboxes = torch.tensor([[0, 0, 4, 4]] * n) if bboxes else None
        self.with_masks = with_masks
        self.reads: list[int] = []

    def read(self, index: int):
        self.reads.append(index)
        if index >= len(self.labels):
            raise IndexError(index)
        mask = torch.full((1, 8, 8), 255, dtype=torch.uint8) if self.with_masks else None
        return torch.zeros(3, 8, 8, dtype=torch.uint8), mask


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        (Stream(1, with_masks=True), True),  # one image is enough to tell
        (Stream(3, with_masks=False), False),
        (Stream(0, with_masks=True), False),  # nothing to read: no foreground
        (Stream(3, with_masks=False, bboxes=True), True),  # boxes are a foreground
    ],
    ids=["stream-masks", "stream-none", "stream-empty", "stream-boxes"],
)
def test_a_streamed_split_is_asked_by_reading_its_first_image(split, expected):
    assert split_has_foreground(split) is expected
    assert split.reads in ([], [0])


def test_in_memory_and_provider_splits_are_told_without_reading():
    bundle = load_tiny(TinyConfig(), None)
    assert split_has_foreground(bundle.splits["train"]) is True
    bare = dataclasses.replace(bundle.splits["train"], masks=None, bboxes=None)
    assert split_has_foreground(bare) is False
    calls: list[int] = []

    def provider(images):
        calls.append(len(images))
        return top_half(images)

    streamed = ProviderMaskedSplit(Stream(2, with_masks=False), provider, "counting")
    assert split_has_foreground(streamed) is True
    assert calls == []  # the provider's masks are known to exist: none computed


@pytest.mark.parametrize("count", [2, 3])
def test_several_splits_without_masks_have_none(count):
    from types import SimpleNamespace

    bundle = load_tiny_without_masks(TinyConfig(), None)
    splits = {name: bundle.splits["train"] for name in ["training set", "meta set", "val set"][:count]}
    ctx = SimpleNamespace(config=SimpleNamespace(dataset_name="tiny-nomask"))
    with pytest.raises(ConfigError, match=f"{' and '.join(splits)} of dataset 'tiny-nomask' have none"):
        require_foreground(ctx, method="m", needs="its masks", splits=splits, allow_no_masks=False)
