"""robust-baselines: JTT, DFR, SUBG/RWG/SUBY/RWY and CVaR-DRO, each beside a port of its released
code (reference/{jtt,dfr,rebalance,dro}_reference.py), with the mechanism tests that
catch an inverted error set, an ignored λ_up, inverted group weights, a dropped CVaR selection."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robust.checkpoint import load_checkpoint
from robust.cli import cli
from robust.engine import Run
from robust.errors import ConfigError
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust.testing import TinyDatasetPlugin
from robust_baselines.chi2_dro import bisect, chi2_loss, chi2_weights
from robust_baselines.cvar_dro import cvar_loss, cvar_weights
from robust_baselines.dfr import head_parameters
from robust_baselines.dfr_protocol import LastLayer, balanced_subset, fit_last_layer, tune_c, worst_group_accuracy
from robust_baselines.jtt import upsampled_indices
from robust_baselines.rebalancing import SubsampleGroups, balancing_weights, subsample

from .reference import dfr_reference, dro_reference, jtt_reference, rebalance_reference

TINY = ["train.batch_size=16", "optimizer=adam", "lr=0.01", "weight_decay=0"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


def make_run(out: Path, method: str, sets=(), rerun=None, **flags) -> Run:
    flags.setdefault("epochs", 2)
    flags.setdefault("seed", 0)
    resolved = resolve_run_config(method, dataset="tiny", model="mlp", sets=[*TINY, *sets], flags=flags)
    return Run(resolved, out, quiet=True, rerun=rerun)


def spy_steps(method, name: str) -> list:
    """Record (index, group, bias) of every batch the named step receives."""
    seen: list = []
    step = getattr(method, name)

    def wrapped(batch, i):
        seen.append((batch.index.cpu().clone(), batch.group, batch.bias))
        return step(batch, i)

    setattr(method, name, wrapped)
    return seen


# -- JTT ----------------------------------------------------------------------------------------


def test_jtt_error_set_is_what_the_identification_model_misclassifies(tmp_path):
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1", "lambda_up=4"], epochs=1)
    method = run.method
    found = method.find_error_set
    expected = {}

    def spy():
        method.model.eval()
        with torch.no_grad():
            x = torch.cat([b.x for b in method.ctx.batches("train")])
        expected["pred"] = method.model(x).argmax(1).numpy()
        method.model.train()
        found()

    method.find_error_set = spy
    seen = spy_steps(method, "retrain_step")
    run.fit()
    labels = run.data.splits["train"].labels.numpy()
    errors = jtt_reference.error_set(expected["pred"], labels)
    assert 0 < len(errors) < len(labels)
    assert method.wrong.nonzero().squeeze(1).tolist() == errors.tolist()
    rows = (tmp_path / "run" / "error_set.csv").read_text().splitlines()
    assert rows[0] == "index,label,wrong" and [int(r.split(",")[2]) for r in rows[1:]] == method.wrong.long().tolist()
    # One retraining epoch: each error-set sample λ_up = 4 times, the others once; no group labels.
    counts = Counter(torch.cat([i for i, _, _ in seen]).tolist())
    assert {i: counts[i] for i in range(96)} == {i: 4 if i in set(errors.tolist()) else 1 for i in range(96)}
    assert all(g is None and b is None for _, g, b in seen)


@pytest.mark.parametrize(("convention", "lambda_up", "up_weight"), [("paper", 5, 4), ("released", 5, 5)])
def test_jtt_epoch_order_equals_the_released_upsampled_loader(convention, lambda_up, up_weight):
    errors = torch.tensor([3, 7, 8, 20])
    copies = lambda_up + (convention == "released")
    ours = upsampled_indices(30, errors, copies)
    ours = ours[torch.randperm(len(ours), generator=torch.Generator().manual_seed(4))]
    theirs = jtt_reference.epoch_order(30, errors.numpy(), up_weight, torch.Generator().manual_seed(4))
    assert ours.tolist() == theirs


def test_jtt_released_error_set_is_the_last_identification_pass(tmp_path):
    """error_set_from=training_pass: the predictions of epoch T's training pass (train mode, before each step)."""
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=2", "error_set_from=training_pass"], epochs=1)
    method = run.method
    update, passes = method.update, {}

    def spy(batch, step):
        with torch.no_grad():
            passes.setdefault(int(method.identify_epoch), {}).update(
                zip(batch.index.tolist(), (method.model(batch.x).argmax(1) != batch.y).tolist(), strict=True)
            )
        return update(batch, step)

    method.update = spy
    run.fit()
    last = [passes[1][i] for i in range(96)]
    assert method.wrong.tolist() == last and method.wrong.tolist() != [passes[0][i] for i in range(96)]


def test_jtt_rerun_retrain_sweeps_lambda_up_on_the_same_error_set(tmp_path):
    make_run(tmp_path / "run", "jtt", ["identification_epochs=1", "lambda_up=2"], epochs=1).fit()
    errors = (tmp_path / "run" / "error_set.csv").read_text()
    identified = load_checkpoint(tmp_path / "run" / "checkpoints" / "phase-identify.pt")["method"]["modules"]
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1", "lambda_up=6"], rerun="retrain", epochs=1)
    seen = spy_steps(run.method, "retrain_step")
    summary = run.fit()
    assert (tmp_path / "run" / "error_set.csv").read_text() == errors
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "phase-identify.pt")["method"]["modules"]
    assert torch.equal(after["model.head.weight"], identified["model.head.weight"])
    size = errors.count(",1\n")
    assert sum(len(i) for i, _, _ in seen) == 96 + 5 * size
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method"]["lambda_up"] == 6
    assert {p["phase"] for p in summary["selection"].values()} == {"retrain"}
    history = read_history(tmp_path / "run" / "history.h5")
    assert history["phase"].tolist().count("identify") == 1


def test_jtt_released_convention_adds_lambda_up_copies_in_a_run(tmp_path):
    """upweight_convention=released: run_expt.py's --up_weight U appends U copies, so E is seen U + 1 times."""
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1", "lambda_up=3", "upweight_convention=released"])
    seen = spy_steps(run.method, "retrain_step")
    run.fit()
    errors = set(run.method.wrong.nonzero().squeeze(1).tolist())
    assert 0 < len(errors) < 96
    counts = Counter(torch.cat([i for i, _, _ in seen]).tolist())  # two retraining epochs
    assert {i: counts[i] for i in range(96)} == {i: 2 * (4 if i in errors else 1) for i in range(96)}


def test_jtt_refuses_an_empty_error_set(tmp_path):
    """No misclassified sample: the retraining would be plain ERM, so the run stops (anniesch/jtt#6)."""
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1", "error_set_from=training_pass"], epochs=1)
    run.method.update = lambda batch, step: {}  # no identification step records a mistake
    with pytest.raises(ConfigError, match="error set is empty"):
        run.fit()


@pytest.mark.parametrize(
    ("dataset", "wd", "epochs", "t", "lambda_up"), [("waterbirds", 1.0, 300, 60, 100), ("celeba", 0.1, 50, 1, 50)]
)
def test_jtt_presets_run_the_released_commands(dataset, wd, epochs, t, lambda_up):
    """The README's sample commands (generate_downstream.py: batch 64, no --augment_data; SGD momentum 0.9)."""
    config = resolve_run_config("jtt", dataset=dataset).config
    method = config.method
    assert (method["optimizer"], method["lr"], method["momentum"], method["weight_decay"]) == ("sgd", 1e-5, 0.9, wd)
    assert (method["identification_epochs"], method["lambda_up"], method["upweight_convention"]) == (
        t,
        lambda_up,
        "paper",
    )
    assert (config.train.epochs, config.train.batch_size, config.train.augment) == (epochs, 64, "none")
    assert config.model["name"] == "resnet50" and config.model["weights"] == "IMAGENET1K_V1"


def test_jtt_retrains_a_fresh_model(tmp_path):
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1"], epochs=1)
    run.method.retrain_step = lambda batch, step: {}  # no retraining steps: the fresh model stays as built
    run.fit()
    identified = load_checkpoint(tmp_path / "run" / "checkpoints" / "phase-identify.pt")["method"]["modules"]
    assert not torch.equal(run.method.model.head.weight.detach(), identified["model.head.weight"])
    assert list(run.method.optimizers) == ["retrain"]


# -- SUBG / RWG / SUBY / RWY --------------------------------------------------------------------


def imbalanced(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(200, generator=gen) < 0.7).long()
    a = torch.where(torch.rand(200, generator=gen) < 0.85, y, 1 - y)
    return y, a


@pytest.mark.parametrize("what", ["groups", "classes"])
def test_subsampling_equals_balancing_groups(what):
    y, a = imbalanced()
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    keys = 2 * y + a if what == "groups" else y
    ours = subsample(keys, perm)
    assert ours.tolist() == rebalance_reference.subsample(y.tolist(), a.tolist(), perm.tolist(), what)
    counts = torch.bincount(keys[ours])
    assert (counts == torch.bincount(keys).min()).all()


def test_subsampling_takes_the_smallest_present_group():
    """A group absent from training (key 1 here) does not cut every group to 0 (BalancingGroups would)."""
    keys = torch.tensor([0] * 9 + [2] * 4 + [3] * 6)
    kept = subsample(keys, torch.randperm(19, generator=torch.Generator().manual_seed(0)))
    assert torch.bincount(keys[kept], minlength=4).tolist() == [4, 0, 4, 4]


@pytest.mark.parametrize("what", ["groups", "classes"])
def test_reweighting_draws_equal_the_weighted_random_sampler(what):
    y, a = imbalanced()
    keys = 2 * y + a if what == "groups" else y
    ours = torch.multinomial(balancing_weights(keys), 200, replacement=True, generator=torch.Generator().manual_seed(3))
    theirs = rebalance_reference.weighted_epoch(
        rebalance_reference.weights(y.tolist(), a.tolist(), what), torch.Generator().manual_seed(3)
    )
    assert ours.tolist() == theirs
    # The minority keys are drawn about as often as the majority ones (inverted weights would starve them).
    draws = torch.multinomial(
        balancing_weights(keys), 20000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    share = torch.bincount(keys[draws]).double() / 20000
    assert torch.allclose(share, torch.full_like(share, 1 / len(share)), atol=0.03)


@pytest.mark.parametrize(("method", "groups"), [("subg", True), ("rwg", True), ("suby", False), ("rwy", False)])
def test_rebalancing_runs_draw_their_balanced_epochs(tmp_path, method, groups):
    run = make_run(tmp_path / "run", method, epochs=1)
    seen = spy_steps(run.method, "update")
    summary = run.fit()
    split = run.data.splits["train"]
    keys = (split.groups if groups else split.labels).cpu()
    drawn = torch.cat([i for i, _, _ in seen])
    assert all((g is not None) == groups for _, g, _ in seen)
    assert summary["protocol"]["train_group_labels"] == groups
    order = run.method.epoch_indices(0, torch.Generator().manual_seed(0))
    if method.startswith("sub"):
        counts = torch.bincount(keys[drawn])
        assert len(drawn) == len(run.method.subset) and (counts == torch.bincount(keys).min()).all()
        assert sorted(order.tolist()) == sorted(run.method.subset.tolist())
    else:
        assert len(drawn) == 96 and torch.equal(run.method.weights, 96 / torch.bincount(keys).double()[keys])


def test_group_rebalancing_refuses_a_dataset_without_groups(tmp_path):
    run = make_run(tmp_path / "run", "suby", epochs=1)  # a class-only method: its view has no group labels
    with pytest.raises(ConfigError, match="suby or rwy"):
        SubsampleGroups(run.method.config, run.method.ctx)


# -- CVaR-DRO -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.3, 0.77, 1.0])
def test_cvar_loss_and_gradient_equal_levy_et_al(alpha):
    v = torch.rand(13, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_()
    ours = cvar_loss(v, alpha)
    (g_ours,) = torch.autograd.grad(ours, v)
    theirs = dro_reference.robust_loss(v, alpha)
    (g_theirs,) = torch.autograd.grad(theirs, v)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-12)
    p = cvar_weights(v.detach(), alpha)
    assert abs(float(p.sum()) - 1) < 1e-12
    if alpha < 1:  # only the largest losses count, and more than the mean
        assert float(ours.detach()) > float(v.detach().mean()) and p[v.detach().argmin()] == 0


def test_cvar_dro_steps_equal_the_reference(tmp_path):
    run = make_run(tmp_path / "run", "cvar_dro", ["alpha=0.3", "optimizer=sgd", "lr=0.05", "momentum=0.9"], epochs=1)
    method = run.method
    start = copy.deepcopy(method.model)
    batches = []
    update = method.update

    def spy(batch, step):
        assert batch.group is None and batch.bias is None  # no group labels
        batches.append((batch.x.clone(), batch.y.clone()))
        logs = update(batch, step)
        batches[-1] += (copy.deepcopy(method.model.state_dict()),)
        return logs

    method.update = spy
    run.fit()
    optimizer = torch.optim.SGD(start.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0)
    for x, y, state in batches:
        losses = torch.nn.functional.cross_entropy(start(x), y, reduction="none")
        optimizer.zero_grad()
        dro_reference.robust_loss(losses, 0.3).backward()
        optimizer.step()
        for key, value in start.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)
    assert len(batches) == 6


# -- χ²-DRO -------------------------------------------------------------------------------------


def chi2_cases():
    gen = torch.Generator().manual_seed(0)
    for m, rho in [(13, 1.0), (64, 0.5), (64, 1.0), (40, 4.0), (200, 0.05), (5, 2.0), (3, 1.0)]:
        # float32 where m <= 1 + 2 rho: the released shortcut casts its weights to float32.
        dtype = torch.float32 if m <= 1 + 2 * rho else torch.float64
        yield m, rho, torch.rand(m, generator=gen, dtype=dtype) * 3
    yield 16, 1.0, torch.full((16,), 0.7, dtype=torch.float64) + 1e-7 * torch.arange(16)  # nearly equal
    yield 9, 1.0, torch.tensor([0.0, 0.5, 2.0, 2.0, 0.1, 0.3, 1.0, 0.2, 0.0], dtype=torch.float64)


@pytest.mark.parametrize(("m", "rho", "v"), list(chi2_cases()))
def test_chi2_loss_and_gradient_equal_levy_et_al(m, rho, v):
    v = v.clone().requires_grad_()
    ours = chi2_loss(v, rho)
    (g_ours,) = torch.autograd.grad(ours, v)
    theirs = dro_reference.chi_square_loss(v, rho)
    (g_theirs,) = torch.autograd.grad(theirs, v)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (10.0, 10.5), (-3.0, 7.0), (4.9, 4.95)])
def test_bisection_widens_and_halves_as_the_released_one(lo, hi):
    def f(eta):
        return torch.tanh(eta - 5.0) * 2

    ours = bisect(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64), f, 1e-9, 1000)
    theirs = dro_reference.bisection(
        torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64), f, 1e-9
    )
    assert float(ours) == float(theirs) and abs(float(ours) - 5.0) < 1e-9
    with pytest.warns(UserWarning, match="did not converge"):  # tol 0: max_iter halvings, then the midpoint
        capped = bisect(torch.tensor(0.0), torch.tensor(1.1), f, 0.0, 3)
    assert float(capped) == float(dro_reference.bisection(torch.tensor(0.0), torch.tensor(1.1), f, 0.0, 3))
    with pytest.raises(RuntimeError, match="no sign change"):
        bisect(torch.tensor(0.0), torch.tensor(1.0), lambda eta: eta * 0 - 1, 1e-4, 10)


def test_chi2_weights_are_the_worst_case_in_the_ball():
    v = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    for rho in (0.1, 0.5, 2.0):
        p = chi2_weights(v, rho)
        assert abs(float(p.sum()) - 1) < 1e-12 and bool((p >= 0).all())
        # On the boundary of the ball (the released tolerance 1e-4 on the constraint) ...
        assert abs(0.5 * float(torch.mean((64 * p - 1) ** 2)) - rho) <= 1e-4
        # ... and tilted towards the largest losses: p is a nondecreasing function of the loss,
        # the smallest loss gets less than uniform weight, the largest more.
        order = torch.argsort(v)
        assert bool((p[order].diff() >= 0).all()) and p[order[0]] < 1 / 64 < p[order[-1]]
        assert float(torch.dot(p, v)) > float(v.mean())
    # A larger ball is at least as pessimistic.
    assert float(chi2_loss(v, 2.0)) > float(chi2_loss(v, 0.5)) > float(chi2_loss(v, 0.1)) > float(v.mean())
    assert float(chi2_loss(v, 0.0)) == pytest.approx(float(v.mean()), abs=1e-15)
    # A small batch (m <= 1 + 2 rho): all the mass on the largest loss; all-zero losses: uniform at once.
    assert chi2_weights(torch.tensor([0.2, 0.9, 0.4]), 1.0).tolist() == [0.0, 1.0, 0.0]
    assert chi2_weights(torch.zeros(8), 1.0).tolist() == [0.125] * 8
    assert torch.isnan(dro_reference.chi_square_best_response(torch.zeros(8), 1.0)).all()  # the repair's reason


def test_chi2_dro_steps_equal_the_reference(tmp_path):
    run = make_run(tmp_path / "run", "chi2_dro", ["rho=0.5", "optimizer=sgd", "lr=0.05", "momentum=0.9"], epochs=1)
    method = run.method
    start = copy.deepcopy(method.model)
    batches = []
    update = method.update

    def spy(batch, step):
        batches.append((batch.x.clone(), batch.y.clone(), batch.group, batch.bias))
        logs = update(batch, step)
        batches[-1] += (copy.deepcopy(method.model.state_dict()),)
        return logs

    method.update = spy
    run.fit()
    optimizer = torch.optim.SGD(start.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0)
    for x, y, group, bias, state in batches:
        assert group is None and bias is None  # no group labels
        losses = torch.nn.functional.cross_entropy(start(x), y, reduction="none")
        optimizer.zero_grad()
        dro_reference.chi_square_loss(losses, 0.5).backward()
        optimizer.step()
        for key, value in start.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)
    assert len(batches) == 6


# -- DFR ----------------------------------------------------------------------------------------


def features(seed: int, n: int = 120, dim: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    a = np.where(rng.rand(n) < 0.75, y, 1 - y)
    x = rng.randn(n, dim) + np.outer(y, np.eye(dim)[0]) + 2 * np.outer(a, np.eye(dim)[1])
    return x, y, 2 * y + a


@pytest.mark.filterwarnings("ignore:.*penalty.*")  # scikit-learn >= 1.8 deprecates penalty="l1" (the port keeps it)
def test_dfr_protocol_equals_the_released_script():
    x_val, y_val, g_val = features(0)
    x_train = features(1, 200)[0]
    grid = [1.0, 0.3, 0.1, 0.03, 0.01]
    np.random.seed(5)
    c_ref = dfr_reference.dfr_on_validation_tune(x_val, y_val, g_val, grid, num_retrains=2)
    coef_ref, intercept_ref, scaler = dfr_reference.dfr_on_validation_eval(c_ref, x_train, x_val, y_val, g_val, 5)
    rng = np.random.RandomState(5)
    c, scores = tune_c(x_val, y_val, g_val, grid, rng, retrains=2)
    layer = fit_last_layer(x_train, x_val, y_val, g_val, c, rng, retrains=5)
    assert c == c_ref and len(scores) == len(grid)
    np.testing.assert_allclose(layer.coef, coef_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.intercept, intercept_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.mean, scaler.mean_) and np.testing.assert_allclose(layer.scale, scaler.scale_)


def test_dfr_balanced_subset_cuts_every_group_to_the_smallest():
    groups = np.array([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5)
    keep = balanced_subset(groups, np.random.RandomState(0))
    assert np.bincount(groups[keep]).tolist() == [3, 3, 3, 3] and len(set(keep.tolist())) == 12


@pytest.mark.parametrize(
    ("dataset", "wd", "batch_size", "epochs", "grid"),
    [
        ("waterbirds", 1e-3, 32, 100, [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]),
        ("celeba", 1e-4, 128, 50, [3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003]),
    ],
)
def test_dfr_presets_train_the_released_base_model(dataset, wd, batch_size, epochs, grid):
    """deep_feature_reweighting's README base-model commands and dfr_evaluate_spurious.py's C grids."""
    config = resolve_run_config("dfr", dataset=dataset).config
    method = config.method
    assert (method["optimizer"], method["lr"], method["momentum"], method["weight_decay"]) == ("sgd", 1e-3, 0.9, wd)
    assert (method["c_grid"], method["num_retrains"], method["from_checkpoint"]) == (grid, 20, "last")
    assert (config.train.epochs, config.train.batch_size, config.train.augment) == (epochs, batch_size, None)
    assert config.model["name"] == "resnet50" and config.model["weights"] == "IMAGENET1K_V1"


def test_dfr_refuses_a_group_missing_from_val_in_one_paragraph():
    with pytest.raises(ConfigError, match=r"group\(s\) \[2\] have no sample"):
        balanced_subset(np.array([0, 0, 1, 3, 3, 1]), np.random.RandomState(0))


def val_groups_known(method) -> bool:
    return method.ctx.data.splits["val"].groups is not None


def test_dfr_refits_the_head_on_balanced_val_and_predicts_with_it(tmp_path):
    run = make_run(tmp_path / "run", "dfr", ["num_retrains=3", "c_grid=[1.0,0.1]"], epochs=1)
    summary = run.fit()
    method = run.method
    report = json.loads((tmp_path / "run" / "dfr.json").read_text())
    assert report["c"] in (1.0, 0.1) and report["num_retrains"] == 3
    assert {p["phase"] for p in summary["selection"].values()} == {"reweight"}
    assert summary["protocol"]["val_used_for_training"] and summary["default_selection"] == "last"
    # DFR^Tr_Val reads val's groups, never the training data's.
    assert not summary["protocol"]["train_group_labels"] and summary["protocol"]["val_group_labels"]
    assert run.method.ctx.data.splits["train"].groups is None and val_groups_known(run.method)
    # The head is the averaged logistic regression: replay the protocol on the same features.
    x_train, x_val = method.features("train"), method.features("val")
    val = run.data.splits["val"]
    rng = np.random.RandomState(0)
    c, _ = tune_c(x_val, val.labels.numpy(), val.groups.numpy(), [1.0, 0.1], rng)
    layer = fit_last_layer(x_train, x_val, val.labels.numpy(), val.groups.numpy(), c, rng, retrains=3)
    z = ((x_val - layer.mean) / layer.scale) @ layer.coef.T + layer.intercept
    method.eval()
    with torch.no_grad():
        x = torch.cat([b.x for b in method.ctx.batches("val")])
        logits = method.predict(x).double().numpy()
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], z[:, 0], rtol=1e-4, atol=1e-4)


def test_dfr_from_an_erm_run_and_without_val_groups(tmp_path):
    resolved = resolve_run_config("erm", dataset="tiny", model="mlp", sets=["train.batch_size=16"], flags={"epochs": 1})
    Run(resolved, tmp_path / "erm", quiet=True).fit()
    run = make_run(tmp_path / "dfr", "dfr", [f"from_run={tmp_path / 'erm'}", "num_retrains=2"])
    assert [p.name for p in run.method.phases()] == ["load", "reweight"]
    run.fit()
    erm = load_checkpoint(tmp_path / "erm" / "checkpoints" / "last.pt")["method"]["modules"]
    ours = run.method.model.state_dict()
    assert torch.equal(ours["encoder.layers.0.weight"], erm["model.encoder.layers.0.weight"])
    assert not torch.equal(ours["head.weight"], erm["model.head.weight"])
    with pytest.raises(ConfigError, match="val group labels"):
        make_run(tmp_path / "nogroups", "dfr", ["num_retrains=2"], epochs=1, val_attr="no").fit()


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["jtt", "dfr", "subg", "rwg", "suby", "rwy", "cvar_dro", "chi2_dro"])
def test_each_baseline_runs_through_robust_run(tmp_path, method):
    extra = {"jtt": ["--set", "identification_epochs=1"], "dfr": ["--set", "num_retrains=2"]}.get(method, [])
    args = ["run", method, "--dataset", "tiny", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "--set", "train.batch_size=32", *extra])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["method"] == method and "test/worst_group_acc" in summary["selection"]["last"]["metrics"]


# -- behaviours the mutation session (nox -s mutants -- baselines) found unpinned ---------------


class Crash(Exception):
    pass


def test_jtt_training_pass_is_recorded_in_epoch_t_alone(tmp_path):
    """T = 2, batches of 19: 96 = 5 · 19 + 1, so each epoch drops its singleton last batch. Nothing is
    recorded before epoch T, and the sample epoch T's pass skipped is not in E, whatever epoch 1 said."""
    sets = ["identification_epochs=2", "error_set_from=training_pass", "train.batch_size=19"]
    run = make_run(tmp_path / "run", "jtt", sets, epochs=1)
    method = run.method
    update, passes, before = method.update, {}, []

    def spy(batch, step):
        with torch.no_grad():
            passes.setdefault(int(method.identify_epoch), {}).update(
                zip(batch.index.tolist(), (method.model(batch.x).argmax(1) != batch.y).tolist(), strict=True)
            )
        return update(batch, step)

    def on_epoch_start(epoch):
        before.append(method.pass_wrong.clone())
        method.identify_epoch.fill_(epoch)

    method.update, method.on_epoch_start = spy, on_epoch_start
    run.fit()
    assert len(passes[0]) == len(passes[1]) == 95 and any(passes[0].values())
    assert not before[1].any()  # entering epoch T: epoch 1's predictions were not kept
    assert method.wrong.tolist() == [passes[1].get(i, False) for i in range(96)]


@pytest.mark.parametrize(("identification_epochs", "crash_at"), [(1, 3), (2, 9)])
def test_jtt_training_pass_error_set_survives_a_mid_epoch_resume(tmp_path, identification_epochs, crash_at):
    """Resumed in the middle of epoch T (6 steps an epoch): the engine does not call on_epoch_start on a
    resume, so the epoch counter comes from the checkpoint, and the steps after the resume are still
    recorded (the counter starts at 0 for T = 1)."""
    sets = [
        *TINY,
        f"identification_epochs={identification_epochs}",
        "error_set_from=training_pass",
        "train.checkpoint_every_steps=1",
    ]
    resolved = resolve_run_config("jtt", dataset="tiny", model="mlp", sets=sets, flags={"epochs": 1, "seed": 0})
    full = Run(resolved, tmp_path / "full", quiet=True)
    full.fit()
    cut = Run(resolved, tmp_path / "cut", quiet=True)
    update = cut.method.update

    def crash(batch, step):
        if step == crash_at:
            raise Crash
        return update(batch, step)

    cut.method.update = crash
    with pytest.raises(Crash):
        cut.fit()
    resumed = Run(resolved, tmp_path / "cut", quiet=True, resume=True)
    resumed.fit()
    assert full.method.wrong.any() and torch.equal(resumed.method.wrong, full.method.wrong)


def test_subsampling_keeps_one_of_each_when_a_group_has_a_single_sample():
    keys = torch.tensor([0] * 5 + [1] + [2] * 3)
    kept = subsample(keys, torch.randperm(9, generator=torch.Generator().manual_seed(0)))
    assert torch.bincount(keys[kept]).tolist() == [1, 1, 1]


@pytest.mark.parametrize("method", ["rwg", "rwy"])
def test_reweighting_epochs_are_the_weighted_random_samplers_draws_with_replacement(tmp_path, method):
    run = make_run(tmp_path / "run", method, epochs=1)
    order = run.method.epoch_indices(0, torch.Generator().manual_seed(2))
    theirs = rebalance_reference.weighted_epoch(run.method.weights.tolist(), torch.Generator().manual_seed(2))
    assert order.tolist() == theirs and len(set(theirs)) < len(theirs)  # minority samples drawn repeatedly


def test_chi2_batch_within_one_plus_two_rho_gets_the_vertex_without_bisection():
    """m = 3 <= 1 + 2ρ = 3.4: the ball holds the vertex, so all the mass goes on the largest loss. The
    constraint cannot be made tight there; a bisection would not converge (NaN weights in float32)."""
    v = torch.tensor([0.2, 0.9, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = chi2_weights(v, 1.2)
    assert p.tolist() == [0.0, 1.0, 0.0] and torch.equal(p, dro_reference.chi_square_best_response(v, 1.2))


def test_bisection_with_the_root_at_the_lower_end_halves_that_bracket():
    """f(lo) = 0: the bracket already holds the root, so it is halved, not widened (as the released loop)."""

    def f(eta):
        return eta - 1.0

    lo, hi = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    ours = bisect(lo, hi, f, 1e-9, 1000)
    assert float(ours) == float(dro_reference.bisection(lo, hi, f, 1e-9)) and 1.0 < float(ours) <= 1.0 + 1e-9


def test_worst_group_accuracy_counts_equal_predictions():
    pred, y, groups = np.array([1, 0, 1, 1]), np.array([1, 0, 1, 0]), np.array([0, 0, 1, 1])
    assert worst_group_accuracy(pred, y, groups, 2) == 0.5


@pytest.mark.filterwarnings("ignore:.*penalty.*")
def test_dfr_fit_defaults_to_the_released_twenty_refits():
    x_val, y_val, g_val = features(0)
    x_train = features(1, 200)[0]
    np.random.seed(3)
    coef_ref, intercept_ref, _ = dfr_reference.dfr_on_validation_eval(0.3, x_train, x_val, y_val, g_val)
    layer = fit_last_layer(x_train, x_val, y_val, g_val, 0.3, np.random.RandomState(3))
    np.testing.assert_allclose(layer.coef, coef_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.intercept, intercept_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", ["binary", "per-class", "three-class"])
def test_dfr_head_computes_the_logistic_regressions_logits(rows):
    """A one-row binary fit becomes logits (0, z); a fit with one row per class is kept row for row."""
    x = features(2)[0]
    rng = np.random.RandomState(0)
    num_classes = 3 if rows == "three-class" else 2
    layer = LastLayer(
        coef=rng.randn(1 if rows == "binary" else num_classes, x.shape[1]),
        intercept=rng.randn(1 if rows == "binary" else num_classes),
        mean=x.mean(0),
        scale=x.std(0),
    )
    weight, bias = head_parameters(layer, num_classes)
    logits = torch.as_tensor(x, dtype=torch.float32) @ weight.T + bias
    z = ((x - layer.mean) / layer.scale) @ layer.coef.T + layer.intercept
    expected = np.concatenate([np.zeros_like(z), z], axis=1) if rows == "binary" else z
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)


def erm_base_run(out: Path, sets=()) -> Path:
    resolved = resolve_run_config(
        "erm", dataset="tiny", model="mlp", sets=["train.batch_size=16", *sets], flags={"epochs": 1}
    )
    Run(resolved, out, quiet=True).fit()
    return out


def test_dfr_from_a_run_of_another_dataset_and_model_names_both(tmp_path):
    base = erm_base_run(tmp_path / "erm")
    config = json.loads((base / "config.json").read_text())
    config["dataset"]["name"], config["model"]["name"] = "waterbirds", "resnet50"
    (base / "config.json").write_text(json.dumps(config))
    message = (
        f"--from '{base}' trained model 'resnet50' on dataset 'waterbirds', but this DFR run describes model "
        "'mlp' on 'tiny': the features must be the loaded model's. Pass --dataset waterbirds --model resnet50 "
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_run(tmp_path / "dfr", "dfr", [f"from_run={base}", "num_retrains=2"]).fit()


def test_dfr_from_a_run_of_another_architecture_quotes_the_first_line_of_the_mismatch(tmp_path):
    base = erm_base_run(tmp_path / "erm", ["model.hidden_sizes=[8]"])
    with pytest.raises(
        ConfigError, match=r"does not fit this run's model: Error\(s\) in loading state_dict for \w+:\. Use"
    ):
        make_run(tmp_path / "dfr", "dfr", [f"from_run={base}", "num_retrains=2"]).fit()


def dfr_run_spied(out: Path, sets=()) -> tuple[Run, list, dict]:
    """A DFR run; the results of its reweight calls, and the summary."""
    run = make_run(out, "dfr", ["num_retrains=2", "c_grid=[1.0,0.1]", *sets], epochs=1)
    reweight, calls = run.method.reweight, []

    def spy(batch, step):
        calls.append(reweight(batch, step))
        return calls[-1]

    run.method.reweight = spy
    return run, calls, run.fit()


def test_dfr_reweight_phase_is_a_single_step(tmp_path):
    _, calls, summary = dfr_run_spied(tmp_path / "run")
    erm_steps = 96 // 16
    assert len(calls) == 1 and summary["train"]["steps"] == erm_steps + 1


def test_dfr_logs_the_tuning_score_as_a_mean_over_the_halvings(tmp_path):
    _, calls, _ = dfr_run_spied(tmp_path / "run", ["tune_retrains=3"])
    report = json.loads((tmp_path / "run" / "dfr.json").read_text())
    score = calls[0]["tune_worst_group_acc"]
    assert score == report["tune_worst_group_acc"][str(report["c"])] and 0 <= score <= 1


def test_dfr_reports_the_nonzero_coefficients_of_its_head(tmp_path):
    run, _, _ = dfr_run_spied(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "dfr.json").read_text())
    head = run.method.model.head.weight.detach()
    assert 0 < report["nonzero_coefficients"] == int((head[1] != 0).sum())


def test_dfr_selects_only_the_refit_model_even_when_the_base_model_scores_better(tmp_path):
    run = make_run(tmp_path / "run", "dfr", ["num_retrains=2", "c_grid=[1.0]"], epochs=1)
    head = run.method.model.head

    def constant_refit(batch, step):  # a refit predicting class 0 everywhere: no better than the base model
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([1.0, 0.0]))
        return {}

    run.method.reweight = constant_refit
    summary = run.fit()
    assert {p["phase"] for p in summary["selection"].values()} == {"reweight"}


def test_chi2_non_convergence_warning_points_at_the_caller():
    v = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(UserWarning, match="did not converge") as caught:
        chi2_weights(v, 0.5, tol=0.0, max_iter=3)
    assert caught[0].filename == __file__


@pytest.mark.parametrize(("drop", "named"), [("group", "group(s) [3]"), ("class", "class(es) [1]")])
def test_dfr_refuses_a_val_without_the_last_group_or_class(tmp_path, drop, named):
    """The balanced-subset check counts groups up to the largest it sees, so a missing LAST group
    passed it, and a regression that never saw the last class would leave head rows unfitted."""
    run = make_run(tmp_path / "run", "dfr", ["num_retrains=2", "c_grid=[1.0]"], epochs=1)
    val = run.method.ctx.data.splits["val"]
    keep = (val.groups != 3) if drop == "group" else (val.labels != 1)
    cut = dataclasses.replace(
        val, labels=val.labels[keep], groups=val.groups[keep], bias=None if val.bias is None else val.bias[keep]
    )
    with pytest.raises(ConfigError, match=re.escape(named)):
        run.method.require_every_group_and_class(cut)
    run.method.require_every_group_and_class(val)  # the whole split passes


@pytest.mark.filterwarnings("ignore:.*penalty.*")
def test_dfr_tune_scores_sum_the_worst_group_accuracy_of_every_group_over_the_halvings():
    """Each C's score is the sum over the halvings of its worst-group accuracy over all the groups of val."""
    from sklearn.preprocessing import StandardScaler

    from robust_baselines.dfr_protocol import logistic_regression

    x_val, y_val, g_val = features(0)
    g_val = np.where((g_val == 3) & (np.arange(len(g_val)) % 2 == 0), 3, g_val)
    y_val = np.where(g_val == 3, np.arange(len(g_val)) % 2, y_val)  # group 3: noisy labels, the worst group
    grid = [1.0, 0.1]
    _, scores = tune_c(x_val, y_val, g_val, grid, np.random.RandomState(7), retrains=2)
    rng, expected = np.random.RandomState(7), dict.fromkeys(grid, 0.0)
    for _ in range(2):
        idx = np.arange(len(x_val))
        rng.shuffle(idx)
        fit, held = idx[len(x_val) // 2 :], idx[: len(x_val) // 2]
        keep = balanced_subset(g_val[fit], rng)
        scaler = StandardScaler().fit(x_val[fit][keep])
        for c in grid:
            model = logistic_regression(c, scaler.transform(x_val[fit][keep]), y_val[fit][keep], rng)
            pred = model.predict(scaler.transform(x_val[held]))
            expected[c] += min((pred == y_val[held])[g_val[held] == g].mean() for g in range(4))
    assert scores == pytest.approx(expected) and scores[1.0] > 0 and all(0 <= v <= 2 for v in scores.values())


def test_worst_group_accuracy_is_the_minimum_over_each_group_alone():
    pred = np.array([1, 0, 1, 1, 1, 0, 0, 1])
    y = np.array([1, 0, 1, 0, 0, 1, 0, 1])
    groups = np.array([0, 0, 1, 1, 1, 1, 2, 2])  # accuracies 1, 1/4, 1
    assert worst_group_accuracy(pred, y, groups, 3) == 0.25


@pytest.mark.filterwarnings("ignore:.*penalty.*")
def test_dfr_fit_without_preprocessing_keeps_raw_features():
    x_val, y_val, g_val = features(0)
    x_train = features(1, 200)[0]
    layer = fit_last_layer(x_train, x_val, y_val, g_val, 0.3, np.random.RandomState(3), retrains=2, preprocess=False)
    assert layer.mean.tolist() == [0.0] * 6 and layer.scale.tolist() == [1.0] * 6 and layer.coef.shape == (1, 6)


def test_chi2_weights_converge_with_their_default_tolerance():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = chi2_weights(torch.tensor([0.1, 0.5, 0.9, 1.3, 2.0, 0.2, 0.7, 1.1]), 0.5)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w >= 0).all())


def test_chi2_vertex_splits_the_mass_over_tied_largest_losses():
    w = chi2_weights(torch.tensor([2.0, 0.5, 2.0]), 1.0)  # m = 3 <= 1 + 2ρ: the vertex
    assert w.tolist() == [0.5, 0.0, 0.5]


def test_bisection_with_the_root_at_the_upper_end_halves_that_bracket():
    f = lambda x: x - 1.0  # noqa: E731
    lo, hi = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    ours = bisect(lo, hi, f, 1e-9, 1000)
    assert float(ours) == float(dro_reference.bisection(lo, hi, f, 1e-9)) and 1.0 - 1e-9 <= float(ours) < 1.0


@pytest.mark.parametrize("lo, hi", [(1.5, 2.0), (1.05, 1.5)])
def test_bisection_widens_a_bracket_less_than_one_above_the_root(lo, hi):
    f = lambda x: x - 1.0  # noqa: E731
    lo, hi = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    ours = bisect(lo, hi, f, 1e-9, 1000)
    assert float(ours) == float(dro_reference.bisection(lo, hi, f, 1e-9)) and abs(float(ours) - 1.0) <= 1e-9


def test_chi2_weights_ignore_the_scale_of_the_losses():
    losses = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(chi2_weights(losses * 1e-3, 0.5), chi2_weights(losses, 0.5), rtol=1e-3, atol=1e-4)


def test_chi2_losses_exactly_min_rel_difference_apart_count_as_equal():
    losses = torch.tensor([99999.0, 99999.5, 1e5], dtype=torch.float64)  # (top - min) / top == 1e-5 exactly
    assert chi2_weights(losses, 0.1).tolist() == [1 / 3] * 3


@pytest.mark.parametrize("rho, vertex", [(0.5, False), (0.8, False), (1.2, True), (1.5, True)])
def test_chi2_three_losses_reach_the_vertex_from_rho_one(rho, vertex):
    w = chi2_weights(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rho, 1e-9, 1000)
    assert (w.tolist() == [0.0, 0.0, 1.0]) == vertex
    if not vertex:
        assert float(0.5 * ((3 * w - 1) ** 2).mean()) == pytest.approx(rho, abs=1e-8)


def test_jtt_error_set_reports_its_worst_group_recall_against_the_true_groups(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1"], epochs=1)
    run.fit()
    logged: list[str] = []
    monkeypatch.setattr(run.method.ctx, "log", logged.append)
    out = run.method.find_error_set()
    assert out["size"] == int(run.method.wrong.sum()) > 0 and 0 <= out["worst_group_recall"] <= 1
    assert f"vs the true groups: worst-group recall {out['worst_group_recall']:.3f}." in logged[-1]


def test_jtt_identification_model_is_never_a_selectable_result(tmp_path):
    """Only the retrained model is JTT's result: model selection never looks at stage 1's epochs."""
    run = make_run(tmp_path / "run", "jtt", ["identification_epochs=1"], epochs=1)
    phases = {p.name: p for p in run.method.phases()}
    assert phases["identify"].select is False and phases["retrain"].select is not False
    summary = run.fit()
    assert all(choice["phase"] == "retrain" for choice in summary["selection"].values())
