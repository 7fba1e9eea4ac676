"""PruSC and IRM-AFE (robust-prusc): masks, the contrastive loss, environments, phases, resume,
rerun, --from, and that no group label reaches a training batch."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robust.checkpoint import load_checkpoint
from robust.cli import cli
from robust.engine import Run
from robust.errors import ConfigError, RunDirError
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust_prusc.contrastive import cluster_contrastive_loss
from robust_prusc.environments import balanced_weights, conflicting, minority_environment
from robust_prusc.masks import WeightMasks, gumbel_sigmoid_mask, maskable_weights

from ..core.tiny import Crash, CrashAt, TinyPlugin

TINY = ["train.batch_size=16", "optimizer=adam", "lr=0.01", "num_clusters=4"]
PHASES = {"prusc": ["pruning_ep=2", "retrain_ep=2"], "irm-afe": []}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


def make_run(out: Path, method: str = "prusc", sets=(), resume: bool = False, rerun=None, **flags) -> Run:
    flags.setdefault("epochs", 2)
    flags.setdefault("seed", 0)
    sets = [*TINY, *PHASES[method], *sets]
    resolved = resolve_run_config(method, dataset="tiny", model="mlp", sets=sets, flags=flags)
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
    fixed = masks.fixed()
    assert fixed["3.weight"][:, :10].sum() == 0 and fixed["3.weight"][:, 10:].all()
    report = masks.report()
    assert report["3.weight"]["kept"] == 2 * (144 - 10) and report["0.weight"]["sparsity"] == 0
    assert report["total"]["weights"] == 4 * 27 + 2 * 144


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
    with pytest.raises(ConfigError, match="trained model 'mlp', but this run uses 'cnn'"):
        resolved = resolve_run_config(
            "prusc", dataset="tiny", model="cnn", sets=[*TINY, f"from_run={tmp_path / 'erm'}"], flags={"epochs": 1}
        )
        Run(resolved, tmp_path / "other", quiet=True).fit()
    with pytest.raises(RunDirError, match="not a run directory"):
        make_run(tmp_path / "third", sets=[f"from_run={tmp_path}"]).fit()


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
