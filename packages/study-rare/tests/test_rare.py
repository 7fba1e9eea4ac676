"""robust-rare: the patterns change exactly their pixels; planting on any dataset; reference names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robust.data import DatasetBundle, StreamSplit
from robust.datasets import load_dataset
from robust.errors import ConfigError, UnknownNameError
from robust.resolve import resolve_run_config
from robust.testing import TinyConfig, TinyDatasetPlugin, load_tiny
from robust_rare.names import parse_name
from robust_rare.patterns import PATTERNS, apply_pattern, canonical, random_pattern
from robust_rare.planting import PlantOptions, plant

from .reference import rare_reference as ref


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


def grey(n: int = 2, size: int = 28) -> torch.Tensor:
    return torch.full((n, 1, size, size), 40, dtype=torch.uint8)


@pytest.mark.parametrize(("pattern", "block"), [("v1", 1), ("v3", 3), ("v8", 5), ("s3", 5)])
def test_small_patterns_whiten_exactly_the_top_left_block(pattern, block):
    for images in (grey(), torch.full((2, 3, 32, 32), 40, dtype=torch.uint8)):
        out = apply_pattern(images, pattern)
        changed = (out != images).any(dim=(0, 1))
        expected = torch.zeros_like(changed)
        expected[:block, :block] = True
        assert torch.equal(changed, expected)
        assert (out[..., :block, :block] == 255).all()


def test_core_pattern_is_the_vertical_bar_rows_3_to_24_columns_13_to_15():
    out = apply_pattern(grey(), "core")
    changed = (out != grey()).any(dim=(0, 1))
    assert changed.nonzero()[:, 0].unique().tolist() == list(range(3, 25))
    assert changed.nonzero()[:, 1].unique().tolist() == [13, 14, 15]
    assert int(changed.sum()) == 22 * 3
    with pytest.raises(ConfigError, match="at least 25 × 16"):
        apply_pattern(grey(size=8), "v30")


@pytest.mark.parametrize(("pattern", "amplitude"), [("v18", 0.25), ("v19", 0.5), ("v20", 1.0)])
def test_random_patterns_add_one_fixed_noise_image_and_clip(pattern, amplitude):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = apply_pattern(images, pattern, seed=7)
    u = random_pattern((3, 32, 32), 7)
    expected = (images.float() / 255 + amplitude * u).clamp(0, 1)
    assert (out.float() / 255 - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(apply_pattern(images, pattern, seed=7), out)  # the same seed, the same pattern
    assert not torch.equal(apply_pattern(images, pattern, seed=8), out)
    # The pattern is the same for every image (one fixed noise image), and never darkens a pixel.
    assert (out.int() >= images.int()).all()


def test_random_pattern_is_drawn_height_width_channels_as_the_reference():
    import numpy as np

    u = np.random.RandomState(3).rand(4, 5, 3)
    assert torch.allclose(random_pattern((3, 4, 5), 3), torch.from_numpy(u).permute(2, 0, 1).float())


def test_every_pattern_name_and_an_unknown_one():
    assert set(PATTERNS) == {"v1", "v3", "v8", "v18", "v19", "v20", "v30"}
    assert [canonical(n) for n in ("s1", "s2", "s3", "r1", "r2", "r3", "core")] == [
        "v1",
        "v3",
        "v8",
        "v18",
        "v19",
        "v20",
        "v30",
    ]
    with pytest.raises(ConfigError, match="Unknown spurious pattern 'v9'"):
        canonical("v9")


def tiny(n_train: int = 96) -> DatasetBundle:
    return load_tiny(TinyConfig(n_train=n_train), None)


def test_planting_changes_n_training_images_of_the_target_class_only():
    data = tiny()
    out = plant(data, PlantOptions(pattern="v3", n_spurious=5, target=1, pattern_seed=2))
    before, after = data.splits["train"], out.splits["train"]
    changed = (after.images != before.images).flatten(1).any(dim=1).nonzero().flatten()
    record = out.info.extra["planted"]
    assert len(changed) == 5 and changed.tolist() == record["index"]
    assert (before.labels[changed] == 1).all() and torch.equal(after.labels, before.labels)
    assert record == {"pattern": "v3", "n": 5, "target": 1, "seed": 2, "index": record["index"]}
    assert torch.equal(out.splits["test"].images, data.splits["test"].images)
    again = plant(data, PlantOptions(pattern="v3", n_spurious=5, target=1, pattern_seed=2))
    assert again.info.extra["planted"]["index"] == record["index"]  # deterministic
    with pytest.raises(ConfigError, match="has only"):
        plant(data, PlantOptions(pattern="v3", n_spurious=1000, target=1))
    with pytest.raises(ConfigError, match="target must be a class"):
        plant(data, PlantOptions(pattern="v3", n_spurious=1, target=5))
    assert plant(data, PlantOptions()) is data


class Streamed(StreamSplit):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.groups = self.bias = self.bboxes = None

    def read(self, index):
        return self.images[index], None


def test_planting_into_a_streamed_split_applies_on_read():
    data = tiny()
    array = data.splits["train"]
    streamed = dataclasses.replace(data, splits={**data.splits, "train": Streamed(array.images, array.labels)})
    options = PlantOptions(pattern="v1", n_spurious=3, target=0, pattern_seed=1)
    out = plant(streamed, options)
    in_memory = plant(data, options)
    for i in range(len(array)):
        assert torch.equal(out.splits["train"].read(i)[0], in_memory.splits["train"].images[i])


def test_options_and_reference_names_through_resolve_and_load():
    config = resolve_run_config("erm", dataset="tiny", sets=["dataset.pattern=v8", "dataset.n_spurious=2"]).config
    assert config.dataset["pattern"] == "v8" and config.dataset["n_spurious"] == 2
    # The reference's three datasets train on their whole training split (no val hold-out).
    assert parse_name("mnistv8-3-0-0") == (
        "mnist",
        {"n_val": 0, "pattern": "v8", "n_spurious": 3, "target": 0, "pattern_seed": 0},
    )
    assert parse_name("fashionv20-100-1-4") == (
        "fashion-mnist",
        {"n_val": 0, "pattern": "v20", "n_spurious": 100, "target": 1, "pattern_seed": 4},
    )
    assert parse_name("cifar10v18-5-9-2") == (
        "cifar10",
        {"val_size": 0, "pattern": "v18", "n_spurious": 5, "target": 9, "pattern_seed": 2},
    )
    assert parse_name("synthetic-cmnistv8-3-0-0")[1] == {
        "pattern": "v8",
        "n_spurious": 3,
        "target": 0,
        "pattern_seed": 0,
    }
    config = resolve_run_config("erm", dataset="mnistv8-3-0-0", sets=["dataset.n_val=100"]).config
    assert config.dataset["n_val"] == 100  # a hold-out when asked
    assert parse_name("waterbirds") is None
    config = resolve_run_config("erm", dataset="tinyv1-4-1-3").config
    assert config.dataset_name == "tiny"
    assert {k: config.dataset[k] for k in ("pattern", "n_spurious", "target", "pattern_seed")} == {
        "pattern": "v1",
        "n_spurious": 4,
        "target": 1,
        "pattern_seed": 3,
    }
    data = load_dataset("tinyv1-4-1-3")
    assert len(data.info.extra["planted"]["index"]) == 4
    with pytest.raises(UnknownNameError):
        resolve_run_config("erm", dataset="nosuchv8-3-0-0")


def test_planting_on_the_generated_digits():
    data = load_dataset("synthetic-cmnistv8-10-0-0", {"n_train": 200, "n_val": 20, "n_test": 20})
    index = data.info.extra["planted"]["index"]
    train = data.splits["train"]
    assert len(index) == 10 and (train.labels[index] == 0).all()
    assert (train.images[index][..., :5, :5] == 255).all()


# -- the spurious score -----------------------------------------------------------------------


def train_digits(tmp_path, n: int) -> str:
    from robust.engine import Run

    sets = ["dataset.n_train=1000", "dataset.n_val=100", "dataset.n_test=300", "dataset.conflict_pct=90"]
    resolved = resolve_run_config(
        "erm", dataset=f"synthetic-cmnistv8-{n}-0-0", sets=sets, flags={"epochs": 6, "seed": 0}
    )
    out = tmp_path / f"n{n}"
    Run(resolved, out, quiet=True).fit()
    return str(out)


def test_spurious_score_is_near_zero_untrained_and_rises_when_planted(tmp_path):
    from robust.trained import load_trained_run
    from robust_rare.score import spurious_score

    scores = {}
    for n in (0, 20):
        trained = load_trained_run(train_digits(tmp_path, n))
        scores[n] = spurious_score(trained.model, trained.data.splits["test"], trained.data.info, "v8", 0, 0)
    assert scores[0]["spurious_score"] < 0.05
    assert scores[20]["spurious_score"] > 0.3
    assert scores[20]["mean_rise"] > scores[0]["mean_rise"]
    # The same model, another pattern it never saw: no effect.
    trained = load_trained_run(str(tmp_path / "n20"))
    assert (
        spurious_score(trained.model, trained.data.splits["test"], trained.data.info, "v1", 0)["spurious_score"] < 0.1
    )


def test_spurious_score_command_on_runs_and_its_clean_errors(tmp_path):
    import json

    from click.testing import CliRunner

    from robust.cli import cli

    planted, clean = train_digits(tmp_path, 20), train_digits(tmp_path, 0)
    runner = CliRunner()
    result = runner.invoke(cli, ["rare", "spurious-score", planted, clean, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["planted_n"] for r in rows] == [20, 0] and rows[0]["spurious_score"] > rows[1]["spurious_score"]
    assert (Path(planted) / "spurious_score-v8-0-0.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"dataset": {"name": "synthetic-cmnist"}, "model": {"name": "mlp"}}))
    result = runner.invoke(cli, ["rare", "spurious-score", str(empty)])
    assert result.exit_code != 0 and "has no 'last' checkpoint" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["rare", "spurious-score", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "not a run directory" in result.output
    for target in ("-1", "10"):  # issue 18: -1 used to score class 9 silently
        result = runner.invoke(cli, ["rare", "spurious-score", planted, "--target", target])
        assert result.exit_code == 2 and "0 to 9, not " + target in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


# -- the study's architectures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "widths"),
    [("MLP", [256]), ("MLPv2", [256, 256]), ("LargeMLP", [256, 256, 256]), ("LargeMLPv2", [512, 512, 512])],
)
def test_reference_mlps_by_their_reference_names(name, widths):
    from robust.models.classifier import build_registered_model
    from robust.registry import get_registry

    entry = get_registry().get("model", name)
    model = build_registered_model(entry, {}, 10, (1, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [*widths, 10]
    assert linears[0].in_features == 28 * 28
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)) for m in model.modules())
    resolved = resolve_run_config("erm", dataset="tiny", model=name, flags={"epochs": 1})
    assert resolved.config.model_name == entry.name


def test_alt_resnet20_is_a_cifar_resnet20_with_option_a_shortcuts():
    from robust.models.classifier import build_registered_model
    from robust.registry import get_registry

    model = build_registered_model(get_registry().get("model", "altResNet20Norm02"), {}, 10, (3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and all(c.bias is None for c in convs)  # 1 stem + 9 blocks x 2, no 1x1 projections
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10) and model.feature_dim == 64


# -- the sweep ----------------------------------------------------------------------------------


def test_study_schedule_and_mitigation_parsing():
    from robust_rare.sweep import expand_mitigations, parse_mitigation, study_milestones

    assert expand_mitigations(["none", "l2-grid"]) == [
        "none",
        "l2=1e-5",
        "l2=1e-4",
        "l2=1e-3",
        "l2=1e-2",
        "l2=5e-2",
        "l2=1e-1",
    ]
    assert len(expand_mitigations(["noise-grid", "noise=0.1"])) == 7

    assert study_milestones(70) == [40, 50, 60] and study_milestones(140) == [60, 100, 120]
    assert study_milestones(300) == [60, 120] and study_milestones(7) == [4, 5, 6]
    assert parse_mitigation("none") == ("none", [])
    assert parse_mitigation("l2=1e-3") == ("l2=1e-3", ["weight_decay=1e-3"])
    assert parse_mitigation("noise=0.2") == ("noise=0.2", ["train.input_noise=0.2"])
    for bad in ("dropout=0.1", "l2=", "noise=lots"):
        with pytest.raises(ConfigError):
            parse_mitigation(bad)


def test_sweep_runs_the_grid_once_scores_it_and_plots(tmp_path, monkeypatch):
    from robust_rare import sweep
    from robust_rare.sweep import SweepSpec, plot, run_sweep, summarise

    spec = SweepSpec(
        dataset="tiny",
        patterns=["v1", "v18"],
        counts=[0, 2],
        seeds=[0, 1],
        target=1,
        mitigations=["none", "noise=0.1"],
        model="mlp",
        epochs=1,
        sets=["train.batch_size=32"],
    )
    rows = run_sweep(spec, tmp_path, progress=lambda line: None)
    # Per mitigation: one clean run scored with both patterns, and 2 patterns x 2 seeds planted runs.
    assert len(rows) == 2 * (2 + 4)
    assert (tmp_path / "tiny-clean" / "none" / "summary.json").is_file()
    assert (tmp_path / "tinyv18-2-1-1" / "noise=0.1" / "summary.json").is_file()
    noisy = json.loads((tmp_path / "tinyv1-2-1-0" / "noise=0.1" / "config.json").read_text())
    assert noisy["train"]["input_noise"] == 0.1 and noisy["method"]["lr"] == 0.01
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("pattern,mitigation,n,seed,spurious_score") and len(lines) == 13
    summary = summarise(rows)
    assert {(r["pattern"], r["mitigation"], r["n"]) for r in summary} == {
        (p, m, n) for p in ("v1", "v18") for m in ("none", "noise=0.1") for n in (0, 2)
    }
    plot(summary, tmp_path / "plot.png", "tiny")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Launched again: nothing retrains; a run that lost its summary (killed at the very end) resumes.
    (tmp_path / "tinyv1-2-1-0" / "none" / "summary.json").unlink()
    trained = []
    original = sweep.run_cell

    def counting(spec, cell, root):
        if not (root / cell.directory(spec.dataset, spec.target) / "summary.json").is_file():
            trained.append(cell)
        return original(spec, cell, root)

    monkeypatch.setattr(sweep, "run_cell", counting)
    again = run_sweep(spec, tmp_path, progress=lambda line: None)
    assert [c.directory("tiny", 1) for c in trained] == ["tinyv1-2-1-0/none"]
    assert [r["spurious_score"] for r in again] == [r["spurious_score"] for r in rows]


def test_sweep_command_end_to_end(tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli

    args = ["rare", "sweep", "--dataset", "tiny", "--patterns", "s1", "--counts", "0,2", "--seeds", "0"]
    args += ["--target", "1", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "sweep")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "spurious score on tiny" in result.output
    assert (tmp_path / "sweep" / "spurious_score.png").is_file()
    result = CliRunner().invoke(cli, [*args[:-2], "--mitigations", "dropout=1", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "Unknown mitigation" in result.output


@pytest.mark.slow
def test_sweep_with_the_local_executor(tmp_path):
    """--executor local: the cells go to the core's sweep executor (submitit processes) and are scored after."""
    from robust_rare.sweep import SweepSpec, run_sweep

    spec = SweepSpec(
        dataset="synthetic-cmnist",
        patterns=["v1"],
        counts=[0, 2],
        seeds=[0],
        target=1,
        mitigations=["none"],
        model="mlp",
        epochs=1,
        sets=["dataset.n_train=300", "dataset.n_val=50", "dataset.n_test=50", "train.num_workers=0", "device=cpu"],
    )
    rows = run_sweep(spec, tmp_path, progress=lambda line: None, executor="local", parallel=2)
    assert [(r["pattern"], r["n"]) for r in rows] == [("v1", 0), ("v1", 2)]
    config = json.loads((tmp_path / "synthetic-cmnistv1-2-1-0" / "none" / "config.json").read_text())
    assert config["model"]["name"] == "mlp" and config["train"]["epochs"] == 1
    assert (tmp_path / ".submitit").is_dir()


# -- removal: influence and retraining ---------------------------------------------------------


def logistic_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=gen)
    y = (x[:, 0] + 0.8 * torch.randn(40, generator=gen) > 0).long()  # not separable: a finite optimum
    return x, y


def fit(x, y, steps=3000):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return model


def test_lissa_matches_the_exact_damped_inverse_hessian_product():
    from torch.func import functional_call, hessian

    from robust_rare.removal import lissa_inverse_hvp

    x, y = logistic_problem()
    model = fit(x, y)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(theta):
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = theta[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return torch.nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    h = hessian(loss)(flat)
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for p in model.parameters()]
    damp, scale = 0.01, 5.0
    exact = torch.linalg.solve(h + damp * scale * torch.eye(len(flat)), torch.cat([t.flatten() for t in v]))
    est = lissa_inverse_hvp(model, v, lambda: (x, y), depth=2000, repeats=1, damp=damp, scale=scale)
    assert torch.allclose(torch.cat([t.flatten() for t in est]), exact, rtol=1e-3, atol=1e-4)
    literal = lissa_inverse_hvp(
        model, v, lambda: (x, y), depth=2000, repeats=1, damp=damp, scale=scale, literal_scale=True
    )
    assert torch.allclose(torch.cat([t.flatten() for t in literal]), scale * exact, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_group_influence_edit_points_where_retraining_without_the_group_goes():
    from robust_rare.removal import group_influence_edit

    x, y = logistic_problem()
    full = fit(x, y)
    group = torch.tensor([0, 1, 2])
    kept = torch.ones(40, dtype=torch.bool)
    kept[group] = False
    without = fit(x[kept], y[kept])
    edited = group_influence_edit(full, x, y, group, depth=800, repeats=5, scale=5.0)
    before = torch.cat([p.detach().flatten() for p in full.parameters()])
    after = torch.cat([edited[n].flatten() for n, _ in full.named_parameters()])
    truth = torch.cat([p.detach().flatten() for p in without.parameters()])
    predicted, actual = after - before, truth - before
    cosine = torch.nn.functional.cosine_similarity(predicted, actual, dim=0)
    assert cosine > 0.9, (predicted, actual)
    assert 0.3 < predicted.norm() / actual.norm() < 3


def test_dropping_the_planted_examples_and_continuing_from_a_run(tmp_path):
    from robust.engine import Run

    data = load_dataset("tinyv3-6-1-0")
    dropped = load_dataset("tinyv3-6-1-0", {"drop_planted": True})
    assert len(dropped.splits["train"]) == len(data.splits["train"]) - 6
    assert dropped.info.extra["planted"]["dropped"] == data.info.extra["planted"]["index"]
    first = Run(
        resolve_run_config("erm", dataset="tinyv3-6-1-0", model="mlp", flags={"epochs": 1}), tmp_path / "a", quiet=True
    )
    first.fit()
    sets = ["dataset.drop_planted=true", f"train.init_from={tmp_path / 'a'}"]
    second = Run(
        resolve_run_config("erm", dataset="tinyv3-6-1-0", model="mlp", sets=sets, flags={"epochs": 1}),
        tmp_path / "b",
        quiet=True,
    )
    assert torch.equal(second.method.model.head.weight, first.method.model.head.weight)
    sets[1] = f"train.init_from={tmp_path / 'a'}:last"  # RUN_DIR:CHECKPOINT
    third = Run(
        resolve_run_config("erm", dataset="tinyv3-6-1-0", model="mlp", sets=sets, flags={"epochs": 1}),
        tmp_path / "d",
        quiet=True,
    )
    assert torch.equal(third.method.model.head.weight, first.method.model.head.weight)
    with pytest.raises(ConfigError, match="does not fit"):
        Run(
            resolve_run_config("erm", dataset="tiny", model="cnn", sets=sets[1:], flags={"epochs": 1}),
            tmp_path / "c",
            quiet=True,
        )


def test_remove_command_writes_scoreable_run_directories(tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.engine import Run

    Run(
        resolve_run_config("erm", dataset="tinyv3-6-1-0", model="mlp", flags={"epochs": 1}),
        tmp_path / "run",
        quiet=True,
    ).fit()
    runner = CliRunner()
    edited = tmp_path / "influence"
    result = runner.invoke(
        cli,
        [
            "rare",
            "remove",
            str(tmp_path / "run"),
            "--how",
            "influence",
            "--out",
            str(edited),
            "--depth",
            "5",
            "--repeats",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["rare", "remove", str(tmp_path / "run"), "--how", "retrain", "--out", str(tmp_path / "retrain")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "retrain" / "config.json").read_text())["dataset"]["drop_planted"] is True
    result = runner.invoke(
        cli, ["rare", "spurious-score", str(tmp_path / "run"), str(edited), str(tmp_path / "retrain"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 3
    Run(
        resolve_run_config("erm", dataset="tiny", model="mlp", flags={"epochs": 1}), tmp_path / "clean", quiet=True
    ).fit()
    result = runner.invoke(
        cli, ["rare", "remove", str(tmp_path / "clean"), "--how", "retrain", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0 and "nothing to remove" in result.output


# -- membership inference -----------------------------------------------------------------------


def test_membership_halves_are_disjoint_and_cover_the_data():
    from robust_rare.membership import halves

    target, shadow = halves(11, 3)
    assert len(target) == 5 and len(shadow) == 6
    assert sorted(torch.cat([target, shadow]).tolist()) == list(range(11))
    whole = load_dataset("tiny")
    a, b = load_dataset("tiny", {"membership_half": "target"}), load_dataset("tiny", {"membership_half": "shadow"})
    assert len(a.splits["train"]) + len(b.splits["train"]) == len(whole.splits["train"])
    assert len(a.splits["test"]) + len(b.splits["test"]) == len(whole.splits["test"])
    assert len(a.splits["val"]) == len(whole.splits["val"])
    planted = load_dataset("tinyv1-4-1-0", {"membership_half": "target"})
    index = planted.info.extra["planted"]["index"]
    assert len(index) == 4 and max(index) < len(planted.splits["train"])  # planted inside the target half


def test_attack_features_and_a_separable_attack():
    from robust_rare.membership import attack_features, evaluate_attack, fit_attack

    logits = torch.tensor([[3.0, -1.0, 0.5], [0.1, 0.2, 0.0]])
    features = attack_features(logits, torch.tensor([0, 0]))
    assert features.flatten().tolist() == pytest.approx([-1.0, 0.5, 3.0, 1.0, 0.0, 0.1, 0.2, 0.0])
    gen = torch.Generator().manual_seed(0)
    confident = attack_features(
        torch.randn(60, 3, generator=gen) * 0.1 + torch.tensor([6.0, 0, 0]), torch.zeros(60, dtype=torch.long)
    )
    unsure = attack_features(torch.randn(60, 3, generator=gen), torch.randint(0, 3, (60,), generator=gen))
    attack = fit_attack(confident, unsure)
    result = evaluate_attack(attack, confident, unsure, confident[:5])
    assert result["attack_acc"] > 0.9 and result["spurious_member_recall"] == 1.0


def test_membership_command_end_to_end_and_a_wrong_run(tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.engine import Run

    for name, dataset in (("target", "tinyv3-6-1-0"), ("shadow", "tiny")):
        resolved = resolve_run_config(
            "erm", dataset=dataset, model="mlp", sets=[f"dataset.membership_half={name}"], flags={"epochs": 3}
        )
        Run(resolved, tmp_path / name, quiet=True).fit()
    runner = CliRunner()
    result = runner.invoke(cli, ["rare", "membership", str(tmp_path / "target"), str(tmp_path / "shadow"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["planted"] == 6 and 0 <= report["attack_acc"] <= 1 and 0 <= report["spurious_member_recall"] <= 1
    assert (tmp_path / "target" / "membership.json").is_file()
    result = runner.invoke(cli, ["rare", "membership", str(tmp_path / "shadow"), str(tmp_path / "target")])
    assert result.exit_code != 0 and "membership_half=target" in result.output


# -- the real datasets' layouts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder", "pattern"),
    [("mnistv8-3-0-0", "MNIST", "v8"), ("fashionv20-3-1-2", "FashionMNIST", "v20"), ("cifar10v30-3-2-1", None, "v30")],
)
def test_planting_on_mnist_fashion_and_cifar10_files(tmp_path, name, folder, pattern):
    from robust_datasets.testing import write_cifar10, write_mnist

    if folder is None:
        write_cifar10(tmp_path / "cifar-10-batches-py")
    else:
        write_mnist(tmp_path / folder)
    options = {"n_val": 5} if folder else {"val_size": 50}
    clean_name = {"MNIST": "mnist", "FashionMNIST": "fashion-mnist", None: "cifar10"}[folder]
    data = load_dataset(name, options, root=tmp_path)
    clean = load_dataset(clean_name, options, root=tmp_path)
    planted = data.info.extra["planted"]
    assert planted["pattern"] == pattern and len(planted["index"]) == 3
    before, after = clean.splits["train"], data.splits["train"]
    changed = (after.images != before.images).flatten(1).any(dim=1).nonzero().flatten().tolist()
    assert set(changed) <= set(planted["index"]) and changed  # only the planted images, at least one changed
    assert (before.labels[planted["index"]] == planted["target"]).all()


# -- against the reference's code (reference/rare_reference.py) ---------------------------------


def as_reference(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) → the reference's float NHWC in [0, 1] (tf.keras's arrays / 255)."""
    return images.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255


@pytest.mark.parametrize("pattern", ["v1", "v3", "v8", "v18", "v19", "v20"])
@pytest.mark.parametrize(("target", "seed"), [(0, 0), (1, 3)])
def test_planting_picks_the_reference_s_images_and_pixels(pattern, target, seed):
    data = tiny()
    train = data.splits["train"]
    out = plant(data, PlantOptions(pattern=pattern, n_spurious=7, target=target, pattern_seed=seed))
    x_ref, index_ref = ref.planted_dataset(as_reference(train.images), train.labels.numpy(), pattern, 7, target, seed)
    assert out.info.extra["planted"]["index"] == sorted(index_ref.tolist())  # the same draw, of the target class
    ours = as_reference(out.splits["train"].images)
    exact = pattern in ("v1", "v3", "v8")
    assert np.abs(ours - x_ref).max() <= (1e-7 if exact else 0.5 / 255 + 1e-6)  # uint8 rounding only
    assert not np.array_equal(ours[index_ref], as_reference(train.images)[index_ref])  # the pattern is there


@pytest.mark.parametrize(
    ("name", "folder"), [("mnistv8-3-0-0", "MNIST"), ("fashionv19-4-1-2", "FashionMNIST"), ("cifar10v20-3-2-1", None)]
)
def test_reference_names_plant_into_the_study_s_images_of_the_whole_training_split(tmp_path, name, folder):
    """No val hold-out under a reference name: the study's RandomState(seed) draw lands on the same images."""
    from robust_datasets.testing import write_cifar10, write_mnist

    if folder is None:
        labels, rows = write_cifar10(tmp_path / "cifar-10-batches-py")
        images = rows.reshape(-1, 3, 32, 32)
    else:
        images, labels = write_mnist(tmp_path / folder)["train"]
        images = images[:, None]
    data = load_dataset(name, root=tmp_path)
    train = data.splits["train"]
    assert len(train) == len(labels) and data.info.extra.get("val_is_test")
    o = parse_name(name)[1]
    x_ref, index_ref = ref.planted_dataset(
        as_reference(torch.from_numpy(images)), labels, o["pattern"], o["n_spurious"], o["target"], o["pattern_seed"]
    )
    assert data.info.extra["planted"]["index"] == sorted(index_ref.tolist())
    assert np.abs(as_reference(train.images) - x_ref).max() <= 0.5 / 255 + 1e-6


def pattern_sensitive_model() -> torch.nn.Module:
    """A random tanh MLP on the tiny images whose class-1 probability the patterns move for some test
    images and not others (scores strictly between 0 and 1 for target 1, about 0 for target 0)."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        model[3].weight.mul_(6)
    return model.eval()


@pytest.mark.parametrize("pattern", ["v1", "v3", "v8", "v19", "v20"])
def test_spurious_score_equals_the_reference_notebook_s(pattern):
    from robust_rare.score import spurious_score

    data = tiny()
    test = data.splits["test"]
    model = pattern_sensitive_model()
    mean = torch.tensor(data.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.info.std).view(1, -1, 1, 1)

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:  # the same model, fed as our loader feeds it
        return model((torch.from_numpy(x).float().permute(0, 3, 1, 2) - mean) / std).numpy()  # as its pred_fn

    for target, seed in ((1, 0), (0, 1)):
        ours = spurious_score(model, test, data.info, pattern, target, seed)
        score, rise = ref.spurious_score(predict, as_reference(test.images), pattern, seed, target)
        others, _ = ref.spurious_score(
            predict, as_reference(test.images), pattern, seed, target, tsty=test.labels.numpy()
        )
        if pattern in ("v1", "v3", "v8"):  # the same pixels: the same numbers
            assert ours["spurious_score"] == pytest.approx(score, abs=1e-6)  # float32 mean
            assert ours["spurious_score_others"] == pytest.approx(others, abs=1e-6)
            assert ours["mean_rise"] == pytest.approx(float(rise.mean()), abs=1e-6)
        else:  # half a grey level apart: the same verdict wherever the rise is not within 0.01 of τ
            clear = np.abs(rise - 0.1) > 0.01
            assert ours["mean_rise"] == pytest.approx(float(rise.mean()), abs=0.01)
            assert abs(ours["spurious_score"] - score) <= (~clear).mean() + 1e-6
    assert 0.05 < spurious_score(model, test, data.info, pattern, 1, 0)["spurious_score"] < 0.9  # not trivial


def small_classifier() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny tanh MLP fitted on 30 random points of 3 classes (a curved loss: the Hessian matters)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 6, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("released_graph", [True, False])
def test_group_influence_edit_equals_the_reference_s_from_the_same_draws(released_graph, one_thread):
    """The reference's LiSSA (its training points drawn as it draws them) against ours replaying the same
    draws: the edited weights agree to float rounding, with our options set to its two departures from
    LiSSA (no division by scale; products differentiated through v); with the textbook products, ours
    equals the reference with v detached (the part that is the same) and differs from the released one."""
    import copy

    from robust_rare.removal import group_influence_edit

    model, x, y = small_classifier()
    spurious = torch.tensor([4, 1, 7])  # the reference's unsorted choice order
    scale, damp, depth, repeats = 10.0, 0.01, 40, 2
    torch.manual_seed(1)
    params, drawn = ref.first_order_group_influence(
        model, x[spurious], y[spurious], x, y, damp, scale, depth, repeats, released_graph=released_graph
    )
    assert len(drawn) == len(spurious) * repeats * depth and len(set(drawn)) > 20  # all the training points
    edited_ref = copy.deepcopy(model)
    ref.group_influence_edit(edited_ref, params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = {"depth": depth, "repeats": repeats, "damp": damp, "scale": scale, "literal_hvp": released_graph}
    literal = group_influence_edit(model, x, y, spurious, literal_scale=True, draws=iter(drawn), **kwargs)
    textbook = group_influence_edit(model, x, y, spurious, draws=iter(drawn), **kwargs)
    for name, p in edited_ref.named_parameters():
        delta = (p - before[name]).detach()
        assert delta.abs().max() > 1e-4  # the edit is not nothing
        assert torch.allclose(literal[name], p.detach(), rtol=1e-5, atol=1e-7), name
        assert torch.allclose(textbook[name] - before[name], delta / scale, rtol=1e-3, atol=1e-6), name
    if released_graph:
        textbook = group_influence_edit(
            model, x, y, spurious, literal_scale=True, draws=iter(drawn), **{**kwargs, "literal_hvp": False}
        )
        gap = max((textbook[n] - p).abs().max() for n, p in edited_ref.named_parameters())
        assert gap > 1e-6  # the reference's extra H_z term is real, and only literal_hvp reproduces it


def test_lissa_defaults_are_the_reference_s_per_dataset():
    from robust_rare.removal import lissa_defaults

    assert lissa_defaults("mnist", 3) == (25.0, 2000) and lissa_defaults("mnist", 100) == (25.0, 1000)
    assert lissa_defaults("fashion-mnist", 99) == (100.0, 2000) and lissa_defaults("fashion-mnist", 100) == (
        100.0,
        1000,
    )
    assert lissa_defaults("cifar10", 3) == (100.0, 1000) and lissa_defaults("cifar10", 500) == (100.0, 1000)
    assert lissa_defaults("synthetic-cmnist", 3) == (25.0, 2000)  # the reference's last branch


def test_remove_command_uses_the_reference_s_lissa_depth_on_cifar10(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.engine import Run
    from robust_datasets.testing import write_cifar10
    from robust_rare import removal

    write_cifar10(tmp_path / "cifar-10-batches-py")
    resolved = resolve_run_config(
        "erm", dataset="cifar10v8-3-0-0", model="mlp", flags={"epochs": 1, "data_root": str(tmp_path)}
    )
    Run(resolved, tmp_path / "run", quiet=True).fit()
    seen = {}

    def recording(model, images, labels, spurious, **kwargs):
        seen.update(kwargs, m=len(spurious), n=len(labels))
        return {k: v.clone() for k, v in model.state_dict().items()}

    monkeypatch.setattr(removal, "group_influence_edit", recording)
    args = ["rare", "remove", str(tmp_path / "run"), "--how", "influence", "--out", str(tmp_path / "gi")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (seen["depth"], seen["scale"], seen["damp"], seen["repeats"]) == (1000, 100.0, 0.01, 10)
    assert (seen["m"], seen["n"]) == (3, 300) and not seen["literal_scale"] and not seen["literal_hvp"]


def source_run(tmp_path: Path) -> Path:
    """A finished run whose step schedule decayed its Adam learning rate from 0.01 to 0.001."""
    from robust.engine import Run

    sets = ["optimizer=adam", "lr=0.01", "weight_decay=0", "schedule=step", "milestones=[1]", "train.augment=none"]
    resolved = resolve_run_config("erm", dataset="tinyv3-6-1-0", model="mlp", sets=sets, flags={"epochs": 2})
    Run(resolved, tmp_path / "source", quiet=True).fit()
    return tmp_path / "source"


def test_retraining_continues_from_the_model_and_its_optimizer_state_as_the_reference(tmp_path, one_thread):
    """The study's incremental retraining loads the optimizer with the model (its decayed learning rate
    and Adam's moments) and trains without a schedule: the same steps as the reference's loop, replayed
    on the same batches from the same checkpoint."""
    from robust.checkpoint import load_checkpoint
    from robust.trained import load_trained_run, trained_weights
    from robust_rare.retraining import retraining_run

    source = source_run(tmp_path)
    saved = load_checkpoint(source / "checkpoints" / "last.pt")["method"]["optimizers"]["model"]
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.001)
    run = retraining_run(source, tmp_path / "retrain", epochs=1)
    optimizer = run.method.optimizers["model"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # not a fresh 0.01
    assert run.config.method["schedule"] == "constant" and run.config.dataset["drop_planted"] is True
    assert len(run.data.splits["train"]) == 96 - 6
    batches = []
    update = run.method.update

    def recording(batch, step):
        batches.append((batch.x.clone(), batch.y.clone()))
        return update(batch, step)

    run.method.update = recording
    run.fit()
    after = load_checkpoint(tmp_path / "retrain" / "checkpoints" / "last.pt")["method"]["optimizers"]["model"]
    assert after["param_groups"][0]["lr"] == pytest.approx(0.001)  # constant: no schedule stepped it
    steps_before = next(iter(saved["state"].values()))["step"]
    assert next(iter(after["state"].values()))["step"] == steps_before + len(batches)  # Adam's counts go on

    reference = load_trained_run(source).model
    _, weights = trained_weights(source)
    # The reference's model is built with the CLI's lr (0.01); its load() replaces it with the saved state's.
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    ref.continue_training(
        reference, reference_optimizer, {"model_state_dict": weights, "optimizer_state_dict": saved}, batches
    )
    ours = load_trained_run(tmp_path / "retrain").model
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    assert not torch.allclose(ours.head.weight, dict(weights)["head.weight"])  # it did train


def test_retraining_defaults_and_its_clean_errors(tmp_path):
    from robust.checkpoint import load_checkpoint, save_checkpoint
    from robust.errors import RunDirError
    from robust_rare.retraining import retraining_run

    source = source_run(tmp_path)
    run = retraining_run(source, tmp_path / "a")
    assert run.config.train.epochs == 3  # the reference's 70 → 140 inclusive: one epoch more than the run's
    payload = load_checkpoint(source / "checkpoints" / "last.pt")
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "config.json").write_text((source / "config.json").read_text())
    save_checkpoint(
        edited / "checkpoints" / "last.pt", {"engine": {}, "method": {"modules": payload["method"]["modules"]}}
    )
    with pytest.raises(ConfigError, match="no optimizer state"):
        retraining_run(edited, tmp_path / "b")
    with pytest.raises(RunDirError, match="not a run directory"):
        retraining_run(tmp_path / "nowhere", tmp_path / "c")


# -- the study's recipe -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "model", "weight_decay", "split_option"),
    [
        ("mnist", "large-mlp", 0.0, ("n_val", 0)),
        ("fashion", "large-mlp", 0.0, ("n_val", 0)),
        ("cifar10", "alt-resnet20", 1e-4, ("val_size", 0)),
    ],
)
def test_sweep_trains_the_study_s_recipe_on_its_datasets(
    tmp_path, monkeypatch, dataset, model, weight_decay, split_option
):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust_rare import sweep

    captured = {}

    def capture(spec, root, **kwargs):
        captured["spec"] = spec
        raise RuntimeError("captured")

    monkeypatch.setattr(sweep, "run_sweep", capture)
    result = CliRunner().invoke(cli, ["rare", "sweep", "--dataset", dataset, "--out", str(tmp_path / "s")])
    assert "spec" in captured, result.output
    spec = captured["spec"]
    assert spec.seeds == [0, 1, 2, 3, 4] and spec.epochs == 70 and spec.target == 0
    counts = [0, 3, 5, 10, 20, 100, 500] if dataset == "cifar10" else [0, 3, 5, 10, 20, 100, 2000, 5000]
    assert spec.counts == counts
    for cell in (sweep.Cell(None, 0, 0, "none"), sweep.Cell("v8", 3, 4, "none"), sweep.Cell("v8", 3, 1, "l2=1e-3")):
        run = sweep.cell_run(spec, cell)
        flags = {"seed": run.seed, **dict(run.flags)}
        config = resolve_run_config(run.method, dataset=run.dataset, sets=list(run.sets), flags=flags).config
        assert config.model_name == model
        assert config.dataset[split_option[0]] == split_option[1]  # the whole training split, the clean run too
        assert config.method["optimizer"] == "adam" and config.method["lr"] == 0.01
        assert config.method["milestones"] == [40, 50, 60] and config.train.batch_size == 128
        assert config.method["weight_decay"] == (1e-3 if cell.mitigation == "l2=1e-3" else weight_decay)
        assert config.seed == 0 and config.train.epochs == 70
    tiny_spec = sweep.SweepSpec(dataset="tiny", patterns=["v1"], counts=[0, 2], seeds=[0])
    tiny_run = sweep.cell_run(tiny_spec, sweep.Cell("v1", 2, 0, "none"))
    assert not any(s.startswith(("model.name", "dataset.n_val")) for s in tiny_run.sets)  # other datasets: theirs
