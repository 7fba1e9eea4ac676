"""Group discovery (`robust discover`), inferred groups read back (dataset.groups=FILE), Group DRO."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from robust_groups.discovery import discover_groups, read_inferred_groups, write_discovery
from torch import nn

from robust.cli import cli
from robust.data import ArraySplit, Batch
from robust.engine import Run
from robust.errors import ConfigError
from robust.groupdro import GroupDRO
from robust.resolve import resolve_run_config
from robust.testing import TinyDatasetPlugin


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


class Identity(nn.Module):
    """A 'model' whose features are its inputs."""

    def features(self, x):
        return x


def blobs(n_per_group: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features in four well-separated directions; group g = 2 * label + attribute."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.eye(4) * 5
    feats, labels, groups = [], [], []
    for g, n in enumerate(n_per_group):
        feats.append(directions[g] + 0.3 * torch.randn(n, 4, generator=gen))
        labels.append(torch.full((n,), g // 2))
        groups.append(torch.full((n,), g))
    return torch.cat(feats), torch.cat(labels), torch.cat(groups)


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int = 7):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # any order: indices carry it
    for start in range(0, len(y), size):
        idx = order[start : start + size]
        yield Batch(x=x[idx], y=y[idx], index=idx)


def split_of(y, groups):
    return ArraySplit(labels=y, groups=groups, bias=groups % 2, images=torch.zeros(len(y), 1, 1, 1, dtype=torch.uint8))


def test_discovery_recovers_groups_and_aligns_val_with_train_clusters():
    xt, yt, gt = blobs([40, 6, 5, 30], seed=0)  # minority groups of 6 and 5
    xv, yv, gv = blobs([10, 10, 10, 10], seed=1)
    splits = {"train": split_of(yt, gt), "val": split_of(yv, gv)}
    found = discover_groups(Identity(), {"train": batches_of(xt, yt), "val": batches_of(xv, yv)}, splits, 2)
    assert found.agreement["train"]["ari"] == pytest.approx(1.0)
    assert found.agreement["train"]["worst_group_recall"] == 1.0
    assert found.agreement["val"]["ari"] == pytest.approx(1.0)
    # Same cluster id means the same thing in both splits: map train's clusters to true groups, apply to val.
    mapping = {int(c): int(g) for c, g in zip(found.groups("train"), gt, strict=True)}
    assert torch.equal(torch.tensor([mapping[int(c)] for c in found.groups("val")]), gv)


def test_discovery_csv_round_trip_and_its_errors(tmp_path):
    xt, yt, gt = blobs([20, 5, 5, 20], seed=0)
    splits = {"train": split_of(yt, gt), "val": split_of(yt, gt), "test": split_of(yt, gt)}
    found = discover_groups(Identity(), {"train": batches_of(xt, yt)}, {"train": splits["train"]}, 2)
    path = tmp_path / "groups.csv"
    write_discovery(path, found)
    sizes = json.loads(path.with_suffix(".json").read_text())["splits"]["train"]["group_sizes"]
    assert sorted(sizes) == [5, 5, 20, 20]
    groups, bias = read_inferred_groups(path, splits)["train"]
    assert torch.equal(groups, found.groups("train")) and torch.equal(bias, found.clusters["train"])
    assert "group" not in path.read_text().splitlines()[0].split(","), "true groups never go into the file"

    rows = list(csv.reader(path.open()))
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(",".join(r) for r in rows[:-1]) + "\n")  # one sample missing
    with pytest.raises(ConfigError, match="discovered from other data"):
        read_inferred_groups(bad, splits)
    flipped = [rows[0], [rows[1][0], rows[1][1], str(1 - int(rows[1][2])), rows[1][3]], *rows[2:]]
    bad.write_text("\n".join(",".join(r) for r in flipped) + "\n")
    with pytest.raises(ConfigError, match="has label"):
        read_inferred_groups(bad, splits)
    bad.write_text("split,index,cluster\ntrain,0,1\n")
    with pytest.raises(ConfigError, match="no label column"):
        read_inferred_groups(bad, splits)
    bad.write_text("split,index,label,cluster\ntest,0,0,1\n")
    with pytest.raises(ConfigError, match="test split"):
        read_inferred_groups(bad, splits)


def make(tmp_path, name, method, sets=(), epochs=2, **flags):
    resolved = resolve_run_config(
        method, dataset="tiny", sets=["lr=0.05", "train.batch_size=32", *sets], flags={"epochs": epochs, **flags}
    )
    run = Run(resolved, tmp_path / name, quiet=True)
    return run.fit(), run


@pytest.mark.slow
def test_discover_command_then_groupdro_on_inferred_groups(tmp_path):
    """ERM run -> `robust discover` -> groupdro with --set dataset.groups=FILE: it trains on the inferred
    groups (label x cluster), selects on the inferred val groups, and is tested on the true groups."""
    make(tmp_path, "erm", "erm")
    out = tmp_path / "groups.csv"
    result = CliRunner().invoke(cli, ["discover", "--from", str(tmp_path / "erm"), "-k", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ARI" in result.output and f"dataset.groups={out}" in result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["splits"]) == {"train", "val"}
    assert "agreement_with_true_groups" in report["splits"]["train"]

    summary, run = make(tmp_path, "gdro", "groupdro", sets=[f"dataset.groups={out}"])
    method: GroupDRO = run.method
    assert method.num_groups == 6  # 2 classes x 3 clusters
    assert torch.isclose(method.q.sum(), torch.tensor(1.0))
    assert summary["protocol"]["inferred_groups"]["splits"] == ["train", "val"]
    assert summary["default_selection"] == "best_val_worst_group"
    metrics = summary["selection"]["last"]["metrics"]
    assert sum(k.startswith("test/group_acc_") for k in metrics) == 4, "test keeps its 4 true groups"
    assert max(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("val/group_acc_")) < 6

    wrong = CliRunner().invoke(cli, ["discover", "--from", str(tmp_path / "erm"), "--dataset", "cmnist"])
    assert wrong.exit_code != 0 and "does not match the run" in wrong.output


def test_groupdro_weights_move_to_the_worst_group(tmp_path):
    _, run = make(tmp_path, "gdro", "groupdro", epochs=1)
    method: GroupDRO = run.method
    method.q.fill_(0.25)
    x = torch.zeros(8, 3, 8, 8)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    group = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.no_grad():  # make group 3's samples badly classified: their label is the other class
        y_wrong = y.clone()
        logits = method.model(x)
        y_wrong[6:] = 1 - logits[6:].argmax(1)
        y_wrong[:6] = logits[:6].argmax(1)
    for step in range(3):
        method.update(Batch(x=x, y=y_wrong, index=torch.arange(8), group=group), step)
    assert int(method.q.argmax()) == 3 and float(method.q[3]) > 0.25


def test_groupdro_without_groups_says_how_to_get_them(tmp_path, register_plugin):
    from robust import hookimpl
    from robust.attributes import without_groups
    from robust.testing import TinyConfig, load_tiny

    def load_plain(config, data_root):
        bundle = load_tiny(TinyConfig(), data_root)
        return dataclasses.replace(bundle, splits={k: without_groups(v) for k, v in bundle.splits.items()})

    class Plain:
        @hookimpl
        def register_datasets(self, register):
            register("plain", load_plain, description="tiny without groups", default_model="mlp")

    with register_plugin(Plain(), "plain-plugin"):
        resolved = resolve_run_config("groupdro", dataset="plain", flags={"epochs": 1})
        with pytest.raises(ConfigError, match="robust discover"):
            Run(resolved, tmp_path / "gdro", quiet=True)


def test_inferred_groups_with_val_groups_withheld(tmp_path):
    """--val-attr no with dataset.groups: the inferred val groups are withheld too; selection by worst class."""
    make(tmp_path, "erm", "erm", epochs=1)
    out = tmp_path / "groups.csv"
    assert CliRunner().invoke(cli, ["discover", "--from", str(tmp_path / "erm"), "--out", str(out)]).exit_code == 0
    summary, _ = make(tmp_path, "gdro", "groupdro", sets=[f"dataset.groups={out}"], epochs=1, val_attr="no")
    assert summary["default_selection"] == "best_val_worst_class"
    assert "test/worst_group_acc" in summary["selection"]["last"]["metrics"]
