"""PruSC and IRM-AFE (robust-prusc): masks, the contrastive loss, environments, phases, resume,
rerun, --from, and that no group label reaches a training batch."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.table import Table
from torch import Tensor, nn

from robust.checkpoint import load_checkpoint
from robust.cli import cli
from robust.engine import Run
from robust.errors import ConfigError, RunDirError
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust.testing import Crash, CrashAt, TinyDatasetPlugin, registered
from robust_prusc.contrastive import cluster_contrastive_loss
from robust_prusc.environments import balanced_weights, conflicting, minority_environment
from robust_prusc.erm_source import check_erm_source, erm_source_differences
from robust_prusc.masks import WeightMasks, gumbel_sigmoid_mask, maskable_weights

from .reference.irm_reference import IRMReference
from .reference.prusc_reference import PruSCReference

TINY = ["train.batch_size=16", "optimizer=adam", "lr=0.01", "num_clusters=4"]
PHASES = {"prusc": ["pruning_ep=2", "retrain_ep=2"], "irm-afe": []}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


def make_run(
    out: Path, method: str = "prusc", sets=(), resume: bool = False, rerun=None, model: str = "mlp", **flags
) -> Run:
    flags.setdefault("epochs", 2)
    flags.setdefault("seed", 0)
    sets = [*TINY, *PHASES[method], *sets]
    resolved = resolve_run_config(method, dataset="tiny", model=model, sets=sets, flags=flags)
    return Run(resolved, out, resume=resume, quiet=True, rerun=rerun)


# -- masks ------------------------------------------------------------------------------------


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def test_masks_cover_conv_and_linear_weights_only():
    assert list(maskable_weights(small_net())) == ["0.weight", "3.weight"]


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize(
    ("form", "keep"),
    [
        ("logit", sigmoid(1.5)),  # π + logistic noise > 0: P(keep) = sigmoid(π) = 0.82
        ("dcwp", sigmoid(sigmoid(1.5))),  # sigmoid(π) + noise > 0: P(keep) = sigmoid(0.82) = 0.69
    ],
)
def test_gumbel_sigmoid_sample_is_hard_with_a_straight_through_gradient(form, keep):
    logits = torch.full((4000,), 1.5, requires_grad=True)
    m = gumbel_sigmoid_mask(logits, generator=torch.Generator().manual_seed(0), form=form)
    assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    assert m.detach().mean().item() == pytest.approx(keep, abs=0.02)
    m.sum().backward()
    assert logits.grad is not None and (logits.grad > 0).all()


def test_the_released_sample_keeps_at_most_73_percent_whatever_the_logit():
    high = torch.full((4000,), 50.0)
    assert gumbel_sigmoid_mask(high, form="dcwp").mean().item() == pytest.approx(sigmoid(1.0), abs=0.02)
    assert gumbel_sigmoid_mask(high, form="logit").mean().item() == 1.0


def test_mask_gradient_flows_and_sparsity_grows_with_lambda_sparse():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()  # learnable: the sign of the red channel
    trained = small_net()
    opt = torch.optim.Adam(trained.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(trained(x), y).backward()
        opt.step()

    def prune(lambda_sparse: float) -> tuple[float, bool]:
        torch.manual_seed(1)
        net = copy.deepcopy(trained)
        net.requires_grad_(False)
        masks = WeightMasks(net, 1.5)
        opt = torch.optim.Adam(masks.parameters(), lr=0.05)
        flowed = False
        for _ in range(60):
            out = masks.masked_call(net, masks.sampled(1.0))(x)
            loss = nn.functional.cross_entropy(out, y) + lambda_sparse * masks.sparsity_penalty()
            opt.zero_grad()
            loss.backward()
            flowed |= all(p.grad is not None and p.grad.abs().sum() > 0 for p in masks.logits)
            opt.step()
        assert all(p.grad is None for p in net.parameters()), "the weights stay frozen"
        return masks.report()["total"]["sparsity"], flowed

    none, flowed = prune(0.0)
    some, _ = prune(1e-3)
    lots, _ = prune(1e-1)
    assert flowed
    assert none < some < lots and lots > 0.5


def test_fixed_mask_thresholds_logits_at_zero_and_the_report_counts_it():
    net = small_net()
    masks = WeightMasks(net, 1.5)
    with torch.no_grad():
        masks.logits[1][:, :10] = -0.1
        masks.logits[1][:, 10] = 0.0  # the reference keeps π = 0: 1[π ≥ 0]
    fixed = masks.fixed()
    assert fixed["3.weight"][:, :10].sum() == 0 and fixed["3.weight"][:, 10:].all()
    report = masks.report()
    assert report["3.weight"]["kept"] == 2 * (144 - 10) and report["0.weight"]["sparsity"] == 0
    assert report["total"]["weights"] == 4 * 27 + 2 * 144


def test_pruning_epochs_draw_every_pseudo_group_equally_often(tmp_path):
    """(class, cluster) pseudo groups of about 43, 5, 47 and 1 samples: each a quarter of the draws."""
    run = make_run(tmp_path / "run")
    method = run.method
    labels = run.data.splits["train"].labels
    clusters = torch.zeros(96, dtype=torch.long)
    zeros, ones = (labels == 0).nonzero().flatten(), (labels == 1).nonzero().flatten()
    clusters[zeros[:5]] = 1
    clusters[ones[:1]] = 1
    method.clusters.copy_(clusters)
    phases = {phase.name: phase for phase in method.phases()}
    prune = phases["prune"].epoch_indices
    draws = torch.cat([prune(e, torch.Generator().manual_seed(e)) for e in range(40)])
    groups = method.pseudo_groups()[draws]
    shares = torch.bincount(groups, minlength=4).double() / len(draws)
    assert shares.tolist() == pytest.approx([0.25] * 4, abs=0.03)
    assert phases["retrain"].epoch_indices is None  # retraining: a plain permutation
    assert method.epoch_indices(0, torch.Generator()) is None
    method.config.prune_sampling = "uniform"
    assert prune(0, torch.Generator()) is None


# -- the contrastive loss ---------------------------------------------------------------------


def test_cluster_contrastive_loss_on_a_hand_made_batch():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    clusters = torch.tensor([0, 1, 0, 1])
    tau = 0.5
    s = (f / f.norm(dim=1, keepdim=True)) @ (f / f.norm(dim=1, keepdim=True)).T / tau
    # Anchor 0: P = {1} (class 0, cluster 1), N = {2} (cluster 0). Anchor 1: P = {0}, N = {3}.
    # Anchor 2: P = {3}, N = {0}. Anchor 3: P = {2}, N = {1}.
    pairs = {0: (1, 2), 1: (0, 3), 2: (3, 0), 3: (2, 1)}
    expected = sum(-s[a, p] + torch.log(torch.exp(s[a, n]) + torch.exp(s[a, p])) for a, (p, n) in pairs.items()) / 4
    got = cluster_contrastive_loss(f, labels, clusters, temperature=tau)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_contrastive_loss_pulls_a_class_together_across_clusters():
    f = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    opt = torch.optim.SGD([f], lr=0.1)
    first = cluster_contrastive_loss(f, labels, clusters).item()
    for _ in range(100):
        loss = cluster_contrastive_loss(f, labels, clusters)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = nn.functional.normalize(f.detach(), dim=1)
    assert loss.item() < first
    assert (z[0] @ z[1]) > (z[0] @ z[4])  # same class, other cluster beats same cluster, other class


def test_contrastive_loss_without_positives_is_zero_with_a_graph():
    f = torch.randn(3, 2, requires_grad=True)
    loss = cluster_contrastive_loss(f, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]))
    assert loss.item() == 0 and loss.requires_grad


# -- environments -----------------------------------------------------------------------------


def test_environments_from_clusters_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    clusters = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # cluster 0 mostly class 0, cluster 1 mostly class 1
    assert conflicting(labels, clusters).tolist() == [False, False, False, True, False, False, False, True]
    env = minority_environment(labels, clusters, torch.Generator().manual_seed(0))
    assert len(env) == 4 and {3, 7} <= set(env.tolist())
    weights = balanced_weights(torch.tensor([0, 0, 0, 1]))
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])


# -- the phases of a run ----------------------------------------------------------------------


def test_prusc_runs_its_phases_and_writes_clusters_and_sparsity(tmp_path):
    summary = make_run(tmp_path / "run").fit()
    run_dir = tmp_path / "run"
    history = read_history(run_dir / "history.h5")
    assert list(dict.fromkeys(history["phase"].tolist())) == ["erm", "prune", "retrain"]
    assert {p["phase"] for p in summary["selection"].values()} == {"retrain"}  # the ERM model is not the result
    assert summary["protocol"]["val_used_for_training"] and summary["default_selection"] == "last"
    rows = (run_dir / "clusters.csv").read_text().splitlines()
    assert rows[0] == "index,label,cluster" and len(rows) == 97  # no true groups: withheld from PruSC
    report = json.loads((run_dir / "clusters.json").read_text())
    assert -1 <= report["agreement_with_true_groups"]["ari"] <= 1 and sum(report["sizes"]) == 96
    sparsity = json.loads((run_dir / "sparsity.json").read_text())
    layers = ["encoder.layers.0.weight", "encoder.layers.2.weight", "encoder.layers.4.weight", "head.weight"]
    assert list(sparsity) == [*layers, "total"]
    assert sparsity["total"]["weights"] == sum(sparsity[name]["weights"] for name in layers)
    for phase in ("erm", "cluster", "prune", "retrain"):
        assert (run_dir / "checkpoints" / f"phase-{phase}.pt").is_file()


def test_retrained_weights_stay_pruned(tmp_path):
    run = make_run(tmp_path / "run", sets=["lambda_sparse=0.05", "lr_prune=0.2"])
    run.fit()
    masks = run.method.masks.fixed()
    params = dict(run.method.model.named_parameters())
    pruned = sum(int((m == 0).sum()) for m in masks.values())
    assert pruned > 0
    for name, mask in masks.items():
        assert (params[name][mask == 0] == 0).all(), name


@pytest.mark.parametrize(
    ("method", "steps", "sets"),
    [("prusc", ("update", "prune_step", "retrain_step"), []), ("irm-afe", ("update", "irm_step"), ["irm_steps=4"])],
)
def test_no_group_label_reaches_a_training_batch(tmp_path, method, steps, sets):
    run = make_run(tmp_path / "run", method=method, sets=sets)
    seen: dict[str, list] = {name: [] for name in steps}

    def spy(name, fn):
        def wrapped(batch, step):
            seen[name].append((batch.group, batch.bias))
            return fn(batch, step)

        return wrapped

    for name in steps:  # every training step of every phase
        setattr(run.method, name, spy(name, getattr(run.method, name)))
    run.fit()
    assert all(seen[name] for name in steps), {k: len(v) for k, v in seen.items()}
    assert all(g is None and b is None for calls in seen.values() for g, b in calls)


def test_prusc_resumes_mid_phase_to_the_same_result(tmp_path, register_plugin):
    sets = ["train.checkpoint_every_steps=1"]
    full = make_run(tmp_path / "full", sets=sets).fit()
    # Evaluations: erm 2, prune 2, retrain 2: crash at the first pruning one.
    with register_plugin(CrashAt(evaluation=3), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", sets=sets).fit()
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["engine"]
    assert state["phase"] == 2  # in the pruning phase
    resumed = make_run(tmp_path / "cut", sets=sets, resume=True).fit()
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["method"]["modules"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["method"]["modules"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["selection"]["last"]["metrics"] == full["selection"]["last"]["metrics"]


def test_a_phase_can_be_rerun_alone_with_other_options(tmp_path):
    make_run(tmp_path / "run").fit()
    before = (tmp_path / "run" / "clusters.csv").read_text()
    erm_weights = load_checkpoint(tmp_path / "run" / "checkpoints" / "phase-erm.pt")["method"]["modules"]
    summary = make_run(tmp_path / "run", sets=["lambda_sparse=0.05", "lr_prune=0.2"], rerun="prune").fit()
    assert summary["selection"]["last"]["phase"] == "retrain"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"]["lambda_sparse"] == 0.05
    assert (tmp_path / "run" / "clusters.csv").read_text() == before  # earlier phases untouched
    sparsity = json.loads((tmp_path / "run" / "sparsity.json").read_text())
    assert sparsity["total"]["sparsity"] > 0
    history = read_history(tmp_path / "run" / "history.h5")
    assert history["phase"].tolist().count("erm") == 2  # the ERM evaluations kept, not repeated
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "phase-erm.pt")["method"]["modules"]
    assert torch.equal(after["model.head.weight"], erm_weights["model.head.weight"])
    with pytest.raises(ConfigError, match="has no phase 'nope'"):
        make_run(tmp_path / "run", rerun="nope").fit()
    with pytest.raises(RunDirError, match="seed"):
        make_run(tmp_path / "run", rerun="prune", seed=5)


def test_from_reuses_an_erm_run_and_refuses_a_mismatch(tmp_path):
    resolved = resolve_run_config("erm", dataset="tiny", model="mlp", sets=["train.batch_size=16"], flags={"epochs": 1})
    Run(resolved, tmp_path / "erm", quiet=True).fit()
    run = make_run(tmp_path / "prusc", sets=[f"from_run={tmp_path / 'erm'}"])
    assert [p.name for p in run.method.phases()][:2] == ["load", "cluster"]
    run.fit()
    loaded = load_checkpoint(tmp_path / "prusc" / "checkpoints" / "phase-load.pt")["method"]["modules"]
    erm = load_checkpoint(tmp_path / "erm" / "checkpoints" / "last.pt")["method"]["modules"]
    assert torch.equal(loaded["model.head.weight"], erm["model.head.weight"])
    with pytest.raises(ConfigError, match=r"model \(model.name\): 'mlp' there, 'cnn' here\. The loaded"):
        resolved = resolve_run_config(
            "prusc", dataset="tiny", model="cnn", sets=[*TINY, f"from_run={tmp_path / 'erm'}"], flags={"epochs": 1}
        )
        Run(resolved, tmp_path / "other", quiet=True).fit()
    with pytest.raises(RunDirError, match="not a run directory"):
        make_run(tmp_path / "third", sets=[f"from_run={tmp_path}"]).fit()


@pytest.fixture(scope="module")
def erm_run(tmp_path_factory) -> Path:
    """A finished tiny ERM run (mlp, input_scale 1) to start PruSC from."""
    out = tmp_path_factory.mktemp("erm") / "erm"
    with registered(TinyDatasetPlugin(), "tiny-test-plugin-erm"):
        resolved = resolve_run_config(
            "erm", dataset="tiny", model="mlp", sets=["train.batch_size=16"], flags={"epochs": 1}
        )
        Run(resolved, out, quiet=True).fit()
    return out


def edited_copy(run_dir: Path, to: Path, **sections) -> Path:
    """A copy of ``run_dir`` whose config.json claims other model/dataset settings (same weights)."""
    shutil.copytree(run_dir, to)
    config = json.loads((to / "config.json").read_text())
    for section, options in sections.items():
        config[section].update(options)
    (to / "config.json").write_text(json.dumps(config))
    return to


@pytest.mark.parametrize(
    ("claimed", "named"),
    [
        ({"model": {"input_scale": 2.0}}, r"model option \(model.input_scale\): 2.0 there, 1.0 here"),
        (
            {"model": {"weights": "IMAGENET1K_V1"}},
            r"pretrained weights \(model.weights\): 'IMAGENET1K_V1' there, unset",
        ),
        ({"dataset": {"image_size": 16}}, r"input size \(dataset.image_size\): 16 there, unset here"),
    ],
)
def test_from_refuses_a_run_with_other_model_settings_or_input_size(tmp_path, erm_run, claimed, named):
    """Same model name and loadable weights, yet another model: refused before loading, naming the setting."""
    other = edited_copy(erm_run, tmp_path / "other", **claimed)
    with pytest.raises(ConfigError, match=named) as caught:
        make_run(tmp_path / "prusc", sets=[f"from_run={other}"]).fit()
    assert "robust run erm --dataset tiny" in str(caught.value) and "drop --from" in str(caught.value)
    assert not (tmp_path / "prusc" / "checkpoints" / "phase-load.pt").exists()


def resolved(method: str, dataset: str, *sets: str):
    return resolve_run_config(method, dataset=dataset, sets=list(sets)).config


@pytest.mark.parametrize("dataset", ["waterbirds", "celeba"])
def test_erm_presets_train_the_imagenet_backbone_prusc_starts_from(dataset):
    """group_DRO's and JTT's ERM: torchvision ResNet-50 with ImageNet weights; PruSC's --from accepts it."""
    erm = resolved("erm", dataset)
    assert erm.model["name"] == "resnet50" and erm.model["weights"] == "IMAGENET1K_V1"
    assert not erm.model["small_input_stem"]
    prusc = resolved("prusc", dataset)
    assert erm_source_differences(erm.model_dump(), prusc) == []
    check_erm_source("runs/erm", erm.model_dump(), prusc)  # accepted


def test_from_check_names_each_difference_from_the_preset():
    prusc = resolved("prusc", "waterbirds")
    scratch = resolved("erm", "waterbirds", "dataset.image_size=112", "model.small_input_stem=true").model_dump()
    scratch["model"]["weights"] = None
    assert erm_source_differences(scratch, prusc) == [
        ("model.small_input_stem", True, False),
        ("model.weights", None, "IMAGENET1K_V1"),
        ("dataset.image_size", 112, 224),
    ]
    expected = (
        r"pretrained weights \(model.weights\): None there, 'IMAGENET1K_V1' here; input size \(dataset.image_size"
    )
    with pytest.raises(ConfigError, match=expected + r"\): 112 there, 224 here") as caught:
        check_erm_source("runs/erm", scratch, prusc)
    assert "preset 'waterbirds'" in str(caught.value)
    other_model = resolved("erm", "waterbirds").model_dump()
    other_model["model"] = {"name": "resnet18", "weights": "IMAGENET1K_V1", "small_input_stem": False}
    with pytest.raises(ConfigError, match=r"model \(model.name\): 'resnet18' there, 'resnet50' here"):
        check_erm_source("runs/erm", other_model, prusc)
    elsewhere = resolved("erm", "celeba").model_dump()
    with pytest.raises(ConfigError, match="trained on dataset 'celeba', but this run uses 'waterbirds'"):
        check_erm_source("runs/erm", elsewhere, prusc)


def test_clusters_can_be_supplied_by_hand(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("index,cluster\n" + "".join(f"{i},{i % 3}\n" for i in range(96)))
    run = make_run(tmp_path / "run", sets=[f"clusters={csv}"])
    run.fit()
    assert run.method.clusters.tolist() == [i % 3 for i in range(96)]


def test_irm_afe_runs_on_environment_batches(tmp_path):
    sets = ["irm_steps=6", "penalty_anneal_iters=3", "penalty_weight=100", "irm_batch_size=16"]
    run = make_run(tmp_path / "run", method="irm-afe", sets=sets)
    erm_model = run.method.model
    layouts = []
    original = run.method.irm_step

    def spy(batch, step):
        layouts.append(batch.index.clone())
        logs = original(batch, step)
        assert logs["penalty"] >= 0
        return logs

    run.method.irm_step = spy
    summary = run.fit()
    assert run.method.model is not erm_model  # IRM trains a fresh classifier
    assert len(layouts) == 6 and all(len(ix) == 16 for ix in layouts)
    minority = set(
        minority_environment(
            run.method.ctx.data.splits["train"].labels, run.method.clusters.cpu(), torch.Generator().manual_seed(0)
        ).tolist()
    )
    conflict = conflicting(run.method.ctx.data.splits["train"].labels, run.method.clusters.cpu())
    # The first half of every batch is the minority environment: half of it (at least) conflicting.
    first_half = torch.cat([ix[:8] for ix in layouts])
    assert conflict[first_half].float().mean() >= 0.4
    assert minority
    assert summary["selection"]["last"]["phase"] == "irm"


def test_irm_penalty_is_zero_at_the_optimal_scale_and_positive_elsewhere():
    from robust_prusc.irm_afe import IRMAFE

    method = IRMAFE.__new__(IRMAFE)
    nn.Module.__init__(method)
    method.loss = lambda z, y: nn.functional.cross_entropy(z, y, reduction="none")
    y = torch.tensor([0, 1])
    confident = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    assert IRMAFE.irm_penalty(method, confident, y).item() < 1e-6  # scaling up barely changes the risk
    lukewarm = torch.tensor([[0.2, -0.2], [-0.2, 0.2]])
    assert IRMAFE.irm_penalty(method, lukewarm, y).item() > 1e-3


def test_cli_rerun_and_from_flags(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["run", "prusc", "--dataset", "tiny", "--rerun", "prune", "--resume", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(cli, ["run", "prusc", "--dataset", "tiny", "--rerun", "prune", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "holds no run" in result.output


# -- the retraining schedule ------------------------------------------------------------------


def retraining_learning_rates(tmp_path: Path, sets=()) -> tuple[list[float], tuple]:
    run = make_run(tmp_path / "run", sets=["pruning_ep=1", "retrain_ep=25", "train.eval_every=100", *sets], epochs=1)
    rates: list[float] = []
    original = run.method.retrain_step

    def spy(batch, step):
        rates.append(run.method.optimizers["retrain"].param_groups[0]["lr"])
        return original(batch, step)

    run.method.retrain_step = spy
    run.fit()
    return rates, run.method.optimizers["retrain"].param_groups[0]["betas"]


def test_retraining_follows_the_official_schedule_by_default(tmp_path):
    """run.py: Adam lr_main 1e-2 (DCWP's betas 0.9, 0.99), StepLR(60, 0.1) stepped after every iteration."""
    rates, betas = retraining_learning_rates(tmp_path)
    assert len(rates) == 75  # 25 epochs of the 40 validation samples in batches of 16: 3 iterations each
    assert rates == pytest.approx([1e-2] * 60 + [1e-3] * 15, rel=1e-9)
    assert betas == (0.9, 0.99)


def test_retraining_schedule_options(tmp_path):
    rates, betas = retraining_learning_rates(tmp_path, ["retrain_schedule=constant", "lr_main=1e-3", "beta2=0.999"])
    assert rates == [1e-3] * 75 and betas == (0.9, 0.999)
    rates, _ = retraining_learning_rates(tmp_path / "b", ["lr_decay_step_main=30", "lr_gamma_main=0.5"])
    assert rates == pytest.approx([1e-2] * 30 + [5e-3] * 30 + [2.5e-3] * 15, rel=1e-9)


# -- reference-step equivalence: the released pruning and retraining steps ---------------------


def record_prusc(run: Run) -> dict:
    """Our run's prune and retrain phases, step by step: the classifier pruning starts from, and per
    step the batch, its clusters, the CPU RNG state the mask sample drew from, and the state after."""
    method = run.method
    rec: dict = {"start": None, "prune": [], "retrain": [], "evaluated": []}
    prune_step, retrain_step, report_sparsity = method.prune_step, method.retrain_step, method.report_sparsity
    x_val = run.data.splits["val"].images.float()

    def spy_prune(batch, step):
        if rec["start"] is None:
            rec["start"] = copy.deepcopy(method.model)
        rng = torch.get_rng_state()
        logs = prune_step(batch, step)
        after = [p.detach().clone() for p in method.masks.logits]
        rec["prune"].append((rng, batch.x.clone(), batch.y.clone(), method.clusters[batch.index].clone(), after))
        rec["prune"][-1] += ({k: v.clone() for k, v in method.model.state_dict().items()},)
        return logs

    def spy_retrain(batch, step):
        logs = retrain_step(batch, step)
        rec["retrain"].append((batch.x.clone(), batch.y.clone(), copy.deepcopy(method.model.state_dict())))
        return logs

    def spy_epoch_end(epoch):  # the pruning phase's on_epoch_end
        predict = method.phase.predict or method.predict  # what the engine evaluates with, in eval mode
        method.eval()
        with torch.no_grad():
            rec["evaluated"].append((predict(x_val), method.model(x_val)))
        method.train()
        report_sparsity(epoch)

    method.prune_step, method.retrain_step, method.report_sparsity = spy_prune, spy_retrain, spy_epoch_end
    run.fit()
    rec["x_val"] = x_val
    return rec


def replay_prusc(rec: dict, **options) -> tuple[PruSCReference, list]:
    """The released steps on the same weights, batches and mask noise; the reference's state after each."""
    ref = PruSCReference(rec["start"], **options)
    after = []
    for rng, x, y, clusters, *_ in rec["prune"]:
        with torch.random.fork_rng():
            torch.set_rng_state(rng)
            ref.prune_step(x, y, clusters)
        after.append(
            ([p.clone() for p in ref.mask_logits()], copy.deepcopy(ref.net.state_dict()), ref.predict(rec["x_val"]))
        )
    return ref, after


def assert_net_matches(ours: dict[str, Tensor], theirs: dict[str, Tensor], masked: list[str], masks: list[Tensor]):
    """Our classifier's state equals the reference's: masked weights as ``W ⊙ m``, the rest as they are."""
    gated = {f"{n.rsplit('.', 1)[0]}.layer.weight": n for n in masked}
    renamed = {}
    for key, value in theirs.items():
        if ".mask.gumbel_pi" in key:
            continue
        name = gated.get(key) or key.replace(".layer.", ".")
        renamed[name] = value * masks[masked.index(name)] if name in masked else value
    assert renamed.keys() == ours.keys()
    for key, value in ours.items():
        torch.testing.assert_close(value, renamed[key], rtol=1e-5, atol=1e-6, msg=key)


PRUNING = ["pruning_ep=2", "retrain_ep=2", "lambda_sparse=0.05", "lr_prune=0.2", "lr_decay_step_main=2"]
REFERENCE_OPTIONS = {"lr_prune": 0.2, "lambda_sparse": 0.05, "lr_decay_step_main": 2}


def assert_matches_reference(rec: dict, ref: PruSCReference, after: list, masked: list[str]) -> None:
    """Mask logits and classifier state after every pruning step, what evaluation sees after every
    pruning epoch, and the retrained classifier after every retraining step."""
    assert len(rec["prune"]) == 12 and len(after) == 12  # 2 epochs of 96 samples in batches of 16
    for step, ((*_, ours, state), (theirs, ref_state, _)) in enumerate(zip(rec["prune"], after, strict=True)):
        for name, a, b in zip(masked, ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"step {step}: mask logits of {name}")
        ones = [torch.ones_like(m) for m in theirs]
        assert_net_matches(state, ref_state, masked, ones)  # frozen weights; BatchNorm statistics
    per_epoch = len(after) // len(rec["evaluated"])
    for epoch, (predicted, _) in enumerate(rec["evaluated"]):
        torch.testing.assert_close(predicted, after[(epoch + 1) * per_epoch - 1][2], rtol=1e-5, atol=1e-5)
    predicted, dense = rec["evaluated"][-1]
    assert not torch.allclose(predicted, dense, atol=1e-3), "the pruned network is evaluated, not the dense one"
    assert sum(int((m == 0).sum()) for m in ref.fixed_masks()) > 0
    assert len(rec["retrain"]) == 6  # 2 epochs of the 40 validation samples in batches of 16
    for x, y, state in rec["retrain"]:
        ref.retrain_step(x, y)
        assert_net_matches(state, ref.net.state_dict(), masked, ref.fixed_masks())


def test_pruning_and_retraining_equal_the_released_steps(tmp_path):
    """The released update, contrastive term and all, is ours without one: it adds ``.item()``, a
    float. With the released mask sample (``mask_sample=dcwp``) and ``lambda_con_prune=0``, ours
    equals it step for step: mask logits, the frozen classifier, evaluation, then retraining (mlp)."""
    run = make_run(tmp_path / "run", sets=[*PRUNING, "mask_sample=dcwp", "lambda_con_prune=0"], epochs=1)
    rec = record_prusc(run)
    ref, after = replay_prusc(rec, **REFERENCE_OPTIONS, sigmoid_first=True, contrastive_grad=False)
    assert_matches_reference(rec, ref, after, run.method.masks.names)


def test_pruning_with_the_contrastive_gradient_equals_the_reference_loop(tmp_path):
    """Our repairs (noise on π, the contrastive term backpropagated, mean over anchors) in the
    reference's loop form, on the cnn (BatchNorm statistics move while the weights are frozen)."""
    sets = [*PRUNING, "lambda_con_prune=0.5", "temperature=0.5"]
    run = make_run(tmp_path / "run", sets=[*sets, "model.width=4", "model.depth=2"], model="cnn", epochs=1)
    rec = record_prusc(run)
    options = {"lambda_con_prune": 0.5, "temperature": 0.5, "sigmoid_first": False, "contrastive_grad": True}
    ref, after = replay_prusc(rec, **REFERENCE_OPTIONS, **options, anchor_reduction="mean")
    assert_matches_reference(rec, ref, after, run.method.masks.names)
    # The contrastive term moves the masks: without its gradient the same steps end elsewhere.
    _, without = replay_prusc(rec, **REFERENCE_OPTIONS, **{**options, "contrastive_grad": False})
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(after[-1][0], without[-1][0], strict=True))


# -- reference-step equivalence: IRMv1 on the cluster environments -------------------------------

IRM = ["irm_steps=6", "penalty_anneal_iters=3", "penalty_weight=100", "irm_batch_size=16", "irm_lr=0.01"]


def hand_made_clusters(tmp_path: Path) -> Path:
    """Clusters unrelated to the labels: both environments are then well filled."""
    csv = tmp_path / "clusters.csv"
    csv.write_text("index,cluster\n" + "".join(f"{i},{i % 4}\n" for i in range(96)))
    return csv


def record_irm(run: Run) -> dict:
    """Our IRM phase: the fresh classifier it starts from, and per step the batch and the state after."""
    method = run.method
    rec: dict = {"start": None, "steps": []}
    irm_step = method.irm_step

    def spy(batch, step):
        if rec["start"] is None:
            rec["start"] = copy.deepcopy(method.model)
        logs = irm_step(batch, step)
        rec["steps"].append((step, batch.x.clone(), batch.y.clone(), copy.deepcopy(method.model.state_dict()), logs))
        return logs

    method.irm_step = spy
    run.fit()
    return rec


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_irm_step_equals_the_reference(tmp_path, model):
    """irm.py's loop body on our environment batches (first half minority, second half balanced):
    the classifier after every step, across the switch to λ = 100 at step 3 and the division by it."""
    sets = [*IRM, f"clusters={hand_made_clusters(tmp_path)}"]
    sets += ["model.width=4", "model.depth=2"] if model == "cnn" else []
    rec = record_irm(make_run(tmp_path / "run", method="irm-afe", sets=sets, model=model))
    ref = IRMReference(rec["start"], lr=0.01, l2_regularizer_weight=1e-3, penalty_weight=100, penalty_anneal_iters=3)
    assert [step for step, *_ in rec["steps"]] == list(range(6))
    for step, x, y, state, _ in rec["steps"]:
        ref.step(step, [(x[:8], y[:8]), (x[8:], y[8:])])
        for key, value in state.items():
            torch.testing.assert_close(value, ref.mlp.state_dict()[key], rtol=1e-5, atol=1e-6, msg=f"{step}: {key}")
    assert any(float(logs["penalty"]) > 1e-4 for *_, logs in rec["steps"])  # the penalty acts in these steps


def test_irm_penalty_weight_and_environments_matter(tmp_path):
    """The reference replay tells apart what the IRM step must not lose: the penalty (dropped or
    without its weight) and the environments (one pooled batch instead of two)."""
    rec = record_irm(
        make_run(tmp_path / "run", method="irm-afe", sets=[*IRM, f"clusters={hand_made_clusters(tmp_path)}"])
    )
    state = rec["steps"][4][3]

    def replay(envs, **options) -> dict:
        ref = IRMReference(rec["start"], lr=0.01, **{"penalty_weight": 100, "penalty_anneal_iters": 3, **options})
        for step, bx, by, *_ in rec["steps"][:5]:
            ref.step(step, envs(bx, by))
        return ref.mlp.state_dict()

    def differs(theirs: dict) -> bool:
        return any(not torch.allclose(state[k], theirs[k], rtol=1e-5, atol=1e-6) for k in state)

    split = lambda bx, by: [(bx[:8], by[:8]), (bx[8:], by[8:])]  # noqa: E731
    assert not differs(replay(split))
    assert differs(replay(lambda bx, by: [(bx, by)]))  # environments pooled
    assert differs(replay(lambda bx, by: [(bx[::2], by[::2]), (bx[1::2], by[1::2])]))  # environments mixed
    assert differs(replay(split, penalty_weight=1.0))  # the penalty weight never switched on
    assert differs(replay(split, penalty_anneal_iters=100))


# -- behaviours the mutation session (nox -s mutants -- prusc) found unpinned -----------------------


def test_kept_fraction_and_sparsity_report_on_a_hand_built_mask():
    """Fixed mask π ≥ 0: 6 of the first layer's 8 weights and 1 of the second's 2, 7 of 10 in all."""
    masks = WeightMasks(nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)), 1.5)
    with torch.no_grad():
        masks.logits[0].copy_(torch.tensor([[-1.0, -0.5, 0.0, 0.5], [1.0, 1.5, 2.0, 3.0]]))
        masks.logits[1].copy_(torch.tensor([[-0.5, 0.5]]))
    report = masks.report()
    assert report["0.weight"] == {"weights": 8, "kept": 6, "sparsity": pytest.approx(0.25)}
    assert report["2.weight"] == {"weights": 2, "kept": 1, "sparsity": pytest.approx(0.5)}
    assert report["total"] == {"weights": 10, "kept": 7, "sparsity": pytest.approx(0.3)}
    assert masks.kept_fraction() == pytest.approx(0.7)


def test_sparsity_report_of_a_single_weight_and_of_a_model_without_maskable_weights():
    one = WeightMasks(nn.Linear(1, 1, bias=False), 1.5)
    assert one.report()["total"] == {"weights": 1, "kept": 1, "sparsity": 0.0}
    assert one.kept_fraction() == 1.0
    empty = WeightMasks(nn.Sequential(nn.ReLU()), 1.5)  # nothing to mask: nothing kept, no division by zero
    assert empty.report() == {"total": {"weights": 0, "kept": 0, "sparsity": 1.0}}
    assert empty.kept_fraction() == 0.0


def test_the_hard_mask_drops_a_weight_whose_relaxation_is_exactly_one_half():
    """m = 1[soft > 0.5], as the reference: where π = −g exactly (soft = sigmoid(0) = 0.5) the
    weight is dropped; a little above, kept."""
    u = torch.rand((2, 1000), generator=torch.Generator().manual_seed(3))
    noise = -torch.log(torch.log(u[1] + 1e-10) / torch.log(u[0] + 1e-10) + 1e-10)  # the sample's own noise

    def sample(logits: Tensor) -> Tensor:
        return gumbel_sigmoid_mask(logits, generator=torch.Generator().manual_seed(3)).detach()

    assert sample(-noise).sum() == 0
    assert sample(-noise + 0.01).sum() == 1000


def test_the_sparsity_table_is_logged_once_after_the_last_pruning_epoch(tmp_path):
    """sparsity.json after every pruning epoch, the table only after the last: the json's numbers,
    the layer names left-aligned and the counts right-aligned."""
    run = make_run(tmp_path / "run", sets=["pruning_ep=3", "lambda_sparse=0.05", "lr_prune=0.2"])
    method = run.method
    logged: list = []
    method.ctx.log = logged.append
    tables_after: list[int] = []
    reports: list[dict] = []
    report_sparsity = method.report_sparsity

    def spy(epoch):
        report_sparsity(epoch)
        tables_after.append(sum(isinstance(m, Table) for m in logged))
        reports.append(json.loads((tmp_path / "run" / "sparsity.json").read_text()))

    method.report_sparsity = spy
    run.fit()
    assert tables_after == [0, 0, 1]
    assert reports[-1]["total"]["sparsity"] > 0 and reports[0] != reports[-1]  # rewritten every epoch
    (table,) = [m for m in logged if isinstance(m, Table)]
    assert [c.justify for c in table.columns] == ["left", "right", "right", "right"]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == list(reports[-1])
    assert cells[1] == [f"{int(r['weights']):,}" for r in reports[-1].values()]
    assert cells[2] == [f"{int(r['kept']):,}" for r in reports[-1].values()]
    assert cells[3] == [f"{1 - r['sparsity']:.4f}" for r in reports[-1].values()]


def test_pruning_trains_only_the_mask_logits_the_weights_stay_frozen(tmp_path):
    """No gradient reaches the classifier while pruning (requires_grad off): its weights and their
    .grad stay as they were, the mask logits move."""
    run = make_run(tmp_path / "run", sets=["lambda_sparse=0.05", "lr_prune=0.2"])
    method = run.method
    prune_step = method.prune_step
    checked: list[bool] = []

    def snapshot() -> list:
        return [(p.detach().clone(), None if p.grad is None else p.grad.clone()) for p in method.model.parameters()]

    def same(a, b) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))

    def spy(batch, step):
        before, logits = snapshot(), [p.detach().clone() for p in method.masks.logits]
        logs = prune_step(batch, step)
        assert not any(p.requires_grad for p in method.model.parameters())
        assert all(torch.equal(w0, w1) and same(g0, g1) for (w0, g0), (w1, g1) in zip(before, snapshot(), strict=True))
        checked.append(any(not torch.equal(a, b) for a, b in zip(logits, method.masks.logits, strict=True)))
        return logs

    method.prune_step = spy
    run.fit()
    assert len(checked) == 12 and all(checked)


def test_an_irm_epoch_holds_as_many_environment_batches_as_the_training_split_fills(tmp_path):
    """96 training samples in batches of 2 environments × 10: ceil(96 / 20) = 5 batches, each the
    10 of the minority environment, then the 10 of the balanced one."""
    run = make_run(tmp_path / "run", method="irm-afe", sets=["irm_steps=6", "irm_batch_size=20"])
    method = run.method
    method.clusters.copy_(torch.arange(96) % 4)
    assert {p.name: p.batch_size for p in method.phases()}["irm"] == 20
    order = method.environment_batches(0, torch.Generator().manual_seed(0))
    assert len(order) == 5 * 20
    labels = method.ctx.data.splits["train"].labels
    minority = set(minority_environment(labels, method.clusters, torch.Generator().manual_seed(0)).tolist())
    assert set(order.view(5, 2, 10)[:, 0].flatten().tolist()) <= minority


def test_no_sample_has_a_cluster_before_the_cluster_phase(tmp_path):
    """Unassigned is −1 (0 would be a real cluster); the cluster phase then assigns every sample."""
    method = make_run(tmp_path / "run").method
    assert method.clusters.tolist() == [-1] * 96
    method.ctx.log = lambda message: None
    method.cluster_representations()
    assert int(method.clusters.min()) >= 0 and int(method.clusters.max()) < 4


def test_the_cluster_log_line_gives_the_agreement_with_the_true_groups_where_known(tmp_path):
    method = make_run(tmp_path / "run").method
    logged: list = []
    method.ctx.log = logged.append
    method.cluster_representations()
    report = json.loads((tmp_path / "run" / "clusters.json").read_text())
    match = report["agreement_with_true_groups"]
    assert logged[-1].endswith(
        f"of sizes {report['sizes']}; vs the true groups: ARI {match['ari']:.3f}, purity {match['purity']:.3f}, "
        f"worst-group recall {match['worst_group_recall']:.3f}."
    )
    method.ctx.group_agreement = lambda assignment, split="train": None  # a dataset without groups
    method.cluster_representations()
    assert logged[-1].endswith(f"of sizes {report['sizes']}.")
