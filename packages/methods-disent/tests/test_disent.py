"""DisEnt, LfF and vanilla (robust-disent): the paper's mechanics, checked against hand computation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from robust import engine
from robust.checkpoint import load_checkpoint
from robust.data import Batch
from robust.device import Precision, resolve_precision
from robust.engine import Run
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust.testing import Crash, CrashAt, TinyDatasetPlugin
from robust_disent.losses import RelativeDifficulty, SampleLossEMA, gce_reference, gce_textbook
from robust_disent.schedule import delayed_step_factor, delayed_step_lr

from .reference.disent_reference import DisEntReference, MLPDisentangle, resnet_disentangle
from .reference.lff_reference import MLP as LfFMLP
from .reference.lff_reference import LfFReference
from .reference.vanilla_reference import MLP as VanillaMLP
from .reference.vanilla_reference import VanillaReference


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"):
        yield


def make_run(
    out: Path, method: str = "disent", sets=(), resume: bool = False, model: str | None = None, **flags
) -> Run:
    flags.setdefault("steps", 8)
    sets = ["train.batch_size=32", "lr=0.01", *sets]
    resolved = resolve_run_config(method, dataset="tiny", model=model, sets=sets, flags=flags)
    return Run(resolved, out, resume=resume, quiet=True)


def tiny_batch(n: int = 12) -> Batch:
    gen = torch.Generator().manual_seed(0)
    return Batch(
        x=torch.randn(n, 3, 8, 8, generator=gen),
        y=torch.randint(0, 2, (n,), generator=gen),
        index=torch.randperm(96, generator=gen)[:n],
    )


# -- GCE ------------------------------------------------------------------------------------


def test_gce_surrogate_gradient_is_q_times_the_textbook_gradient():
    logits = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (16,))
    (grad_ref,) = torch.autograd.grad(gce_reference(logits, targets, 0.7).sum(), logits)
    (grad_gce,) = torch.autograd.grad(gce_textbook(logits, targets, 0.7).sum(), logits)
    assert torch.allclose(grad_ref, 0.7 * grad_gce, atol=1e-6)
    # The textbook gradient is p_y^q times CE's.
    p_y = logits.softmax(1).gather(1, targets[:, None]).squeeze(1).detach()
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    (grad_ce,) = torch.autograd.grad((ce * p_y**0.7).sum(), logits)
    assert torch.allclose(grad_gce, grad_ce, atol=1e-6)
    # Values differ: the surrogate is not the GCE value.
    assert not torch.allclose(gce_reference(logits, targets), gce_textbook(logits, targets))


# -- the loss EMA and the relative difficulty -------------------------------------------------


def test_ema_update_and_class_max_normalisation_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1])
    ema = SampleLossEMA(labels, num_classes=2, alpha=0.7)
    ema.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 2]))  # first visits: copies
    assert ema.loss.tolist() == pytest.approx([1.0, 0, 2.0, 0, 0])
    ema.update(torch.tensor([3.0, 4.0]), torch.tensor([0, 3]))  # 0 again: 0.7*1 + 0.3*3; 3 first visit
    assert ema.loss.tolist() == pytest.approx([1.6, 0, 2.0, 4.0, 0])
    assert ema.class_max().tolist() == pytest.approx([1.6, 4.0])  # over ALL samples of the class
    assert ema.normalized(torch.tensor([0, 2, 3])).tolist() == pytest.approx([1.0, 0.5, 1.0])


def test_relative_difficulty_weight_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    rd = RelativeDifficulty(labels, num_classes=2, alpha=0.7)
    index = torch.tensor([0, 1, 2, 3])
    ce_b = torch.tensor([2.0, 1.0, 0.5, 0.25])
    ce_d = torch.tensor([1.0, 1.0, 1.0, 0.5])
    w = rd(ce_b, ce_d, index)
    # Normalised: b = [1, .5, 1, .5]; d = [1, 1, 1, .5]; W = b / (b + d + 1e-8).
    expected = torch.tensor([1 / 2, 0.5 / 1.5, 1 / 2, 0.5 / 1.0])
    assert torch.allclose(w, expected, atol=1e-6)


def test_a_class_whose_losses_are_all_zero_gets_weight_zero_not_nan():
    rd = RelativeDifficulty(torch.tensor([0, 0]), num_classes=1, alpha=0.7)
    w = rd(torch.zeros(2), torch.zeros(2), torch.tensor([0, 1]))
    assert torch.equal(w, torch.zeros(2))


# -- DisEnt's two branches --------------------------------------------------------------------


def _reaches(loss: torch.Tensor, module: torch.nn.Module) -> bool:
    grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_each_loss_reaches_only_its_own_branch(tmp_path):
    method = make_run(tmp_path / "run", sets=["curr_step=0"]).method
    terms = method.loss_terms(tiny_batch(), step=1)
    i, b = method.intrinsic, method.bias
    parts = {
        "E_i": i.encoder,
        "C_i": i.head,
        "E_b": b.encoder,
        "C_b": b.head,
    }
    expected = {
        "dis_conflict": {"E_i", "C_i"},
        "swap_conflict": {"E_i", "C_i"},
        "dis_align": {"E_b", "C_b"},
        "swap_align": {"E_b", "C_b"},
    }
    for term, owners in expected.items():
        reached = {name for name, part in parts.items() if _reaches(terms[term], part)}
        assert reached == owners, term


def test_both_classifiers_read_the_concatenated_features(tmp_path):
    method = make_run(tmp_path / "run").method
    d = method.intrinsic.feature_dim
    assert method.intrinsic.head.in_features == method.bias.head.in_features == 2 * d
    x = tiny_batch().x
    expected = method.intrinsic.head(torch.cat([method.intrinsic.features(x), method.bias.features(x)], 1))
    assert torch.equal(method.predict(x), expected)


def test_swapping_starts_strictly_after_curr_step(tmp_path):
    method = make_run(tmp_path / "run", sets=["curr_step=3"]).method
    batch = tiny_batch()
    assert "swap_conflict" not in method.loss_terms(batch, step=3)
    assert {"swap_conflict", "swap_align"} <= set(method.loss_terms(batch, step=4))
    logs = method.update(batch, step=4)
    assert "swap_align" in logs and torch.isfinite(logs["loss"])


def test_lr_timeline_matches_a_steplr_that_starts_at_curr_step():
    """The reference calls StepLR.step() after each step >= curr_step; ours is one LambdaLR per step."""
    curr, decay, gamma, steps = 5, 4, 0.5, 30
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = delayed_step_lr(ours, curr, decay, gamma)
    ref_schedule = torch.optim.lr_scheduler.StepLR(ref, step_size=decay, gamma=gamma)
    for step in range(steps):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"]), step
        ours.step(), ref.step()
        schedule.step()
        if step >= curr:
            ref_schedule.step()
    # DisEnt's CMNIST timeline (curr_step = decay = 10k, gamma 0.5): first decay at step 20k.
    factors = [delayed_step_factor(s, 10_000, 10_000, 0.5) for s in (0, 19_999, 20_000, 30_000, 40_000, 49_999)]
    assert factors == [1, 1, 0.5, 0.25, 0.125, 0.125]


def test_lr_timeline_in_a_run(tmp_path):
    sets = ["curr_step=2", "use_lr_decay=true", "lr_decay_step=3", "lr_gamma=0.5", "train.eval_every_steps=1"]
    make_run(tmp_path / "run", sets=sets, steps=10).fit()
    history = read_history(tmp_path / "run" / "history.h5")
    # After k steps the optimiser holds the lr of step k (0-based).
    expected = [0.01 * delayed_step_factor(k, 2, 3, 0.5) for k in history["step"]]
    assert list(history["train/lr_intrinsic"]) == pytest.approx(expected)
    assert list(history["train/lr_bias"]) == pytest.approx(expected)
    assert min(expected) < 0.01  # the schedule did decay within the run


def test_train_batches_are_full_as_the_reference_drops_the_last(tmp_path):
    run = make_run(tmp_path / "run", sets=["train.batch_size=40"], steps=4)
    sizes = []
    original = run.method.update

    def spy(batch, step):
        sizes.append(len(batch.y))
        return original(batch, step)

    run.method.update = spy
    run.fit()
    assert sizes == [40, 40, 40, 40]  # 96 samples: 2 full batches per epoch, the 16 left are dropped


@pytest.mark.parametrize("method", ["disent", "lff"])
def test_resume_mid_run_equals_uninterrupted(tmp_path, register_plugin, method):
    sets = ["curr_step=2", "use_lr_decay=true", "lr_decay_step=2"] if method == "disent" else []
    sets = [*sets, "train.eval_every_steps=2", "train.checkpoint_every_steps=1"]
    full = make_run(tmp_path / "full", method, sets=sets, steps=9, seed=1).fit()
    with register_plugin(CrashAt(evaluation=3), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", method, sets=sets, steps=9, seed=1).fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["engine"]["batch"] > 0
    resumed = make_run(tmp_path / "cut", method, sets=sets, steps=9, seed=1, resume=True).fit()
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["method"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["method"]
    for key, value in a["modules"].items():  # weights and the loss EMA tables
        assert torch.equal(value, b["modules"][key]), key
    assert any("difficulty.ema_b.loss" in key for key in a["modules"])
    assert resumed["selection"]["last"]["metrics"] == full["selection"]["last"]["metrics"]


# -- LfF ------------------------------------------------------------------------------------


def test_lff_losses_train_independent_classifiers(tmp_path):
    method = make_run(tmp_path / "run", "lff").method
    terms = method.loss_terms(tiny_batch(), step=0)
    assert _reaches(terms["biased"], method.biased) and not _reaches(terms["biased"], method.debiased)
    assert _reaches(terms["debiased"], method.debiased) and not _reaches(terms["debiased"], method.biased)
    x = tiny_batch().x
    assert torch.equal(method.predict(x), method.debiased(x))


# -- presets and reporting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "sets", "preset"),
    [
        ("synthetic-cmnist", [], "synthetic-cmnist"),
        ("cmnist", ["dataset.conflict_pct=0.5"], "cmnist-0.5pct"),
        ("cifar10c", ["dataset.conflict_pct=2"], "cifar10c-2pct"),
        ("bffhq", [], "bffhq-0.5pct"),
    ],
)
def test_preset_is_picked_from_dataset_and_conflict_ratio(dataset, sets, preset):
    config = resolve_run_config("disent", dataset=dataset, sets=sets).config
    assert config.preset == preset


def test_reference_settings_of_a_named_preset():
    config = resolve_run_config("disent", dataset="cifar10c", sets=["preset=cifar10c-1pct"]).config
    m = config.method
    assert (m["lr"], m["lambda_dis"], m["lambda_swap_b"], m["lambda_swap"]) == (0.001, 5.0, 5.0, 1.0)
    assert (m["curr_step"], m["lr_decay_step"], m["lr_gamma"], m["use_lr_decay"]) == (10_000, 10_000, 0.5, True)
    assert config.dataset["conflict_pct"] == 1.0
    assert (config.train.steps, config.train.batch_size, config.train.eval_every_steps) == (50_000, 256, 500)
    assert config.model["name"] == "resnet18" and config.model["small_input_stem"] is False
    bffhq = resolve_run_config("disent", dataset="bffhq").config
    assert (bffhq.method["lr_gamma"], bffhq.method["lambda_swap"], bffhq.train.batch_size) == (0.1, 0.1, 64)
    cmnist = resolve_run_config("vanilla", dataset="cmnist").config
    assert cmnist.model["hidden_sizes"] == [100, 100, 16]
    assert cmnist.model["input_scale"] == pytest.approx(1 / 255)
    assert (cmnist.method["optimizer"], cmnist.method["lr"], cmnist.method["schedule"]) == ("adam", 0.01, "constant")


def test_user_options_override_the_preset():
    config = resolve_run_config("disent", dataset="cmnist", sets=["lambda_dis=3", "train.steps=100"]).config
    assert config.method["lambda_dis"] == 3 and config.train.steps == 100
    assert config.method["lambda_swap_b"] == 10  # the rest of the preset stays


@pytest.mark.parametrize("method", ["vanilla", "lff", "disent"])
def test_runs_on_synthetic_cmnist_and_reports_every_rule(tmp_path, method):
    sets = ["dataset.n_train=400", "dataset.n_val=100", "dataset.n_test=100", "train.eval_every_steps=5"]
    if method == "disent":
        sets.append("curr_step=5")
    resolved = resolve_run_config(method, dataset="synthetic-cmnist", sets=sets, flags={"steps": 12})
    assert resolved.config.preset == "synthetic-cmnist"
    summary = Run(resolved, tmp_path / "run", quiet=True).fit()
    assert summary["train"]["steps"] == 12
    for rule in ("best_val_worst_group", "best_val_avg", "last", "oracle_test"):
        metrics = summary["selection"][rule]["metrics"]
        for key in ("unbiased_acc", "aligned_acc", "conflicting_acc", "unbiased_cellmean_acc"):
            assert 0.0 <= metrics[f"test/{key}"] <= 1.0
    history = read_history(tmp_path / "run" / "history.h5")
    best = max(history["test/avg_acc"])
    assert summary["selection"]["oracle_test"]["metrics"]["test/avg_acc"] == best


@pytest.mark.parametrize(
    ("name", "pct", "preset"), [("cmnist", "1pct", "cmnist-1pct"), ("bffhq", "0.5pct", "bffhq-0.5pct")]
)
def test_runs_on_the_released_layout_with_the_papers_preset(tmp_path, name, pct, preset):
    from robust_datasets.testing import write_lff_release

    write_lff_release(tmp_path / "data", name, pcts=(pct,), classes=10 if name == "cmnist" else 2)
    sets = ["train.eval_every_steps=2", "train.batch_size=16"]
    if name == "bffhq":
        sets.append("dataset.image_size=32")
    flags = {"steps": 4, "data_root": str(tmp_path / "data")}
    resolved = resolve_run_config("disent", dataset=name, sets=sets, flags=flags)
    assert resolved.config.preset == preset
    run = Run(resolved, tmp_path / "run", quiet=True)
    _assert_builds_the_run_script(run, name)
    summary = run.fit()
    oracle = summary["selection"]["oracle_test"]
    assert summary["train"]["steps"] == 4
    if name == "bffhq":  # DisEnt reports bias-conflicting test accuracy on BFFHQ
        assert "conflicting_acc" in oracle["label"]
        history = read_history(tmp_path / "run" / "history.h5")
        assert oracle["metrics"]["test/conflicting_acc"] == max(history["test/conflicting_acc"])


def _assert_builds_the_run_script(run: Run, name: str) -> None:
    """What the preset makes the run build: the networks, Adam, the LR timeline and swap start, fp32."""
    method = run.method
    lr, gamma, classes = (0.01, 0.5, 10) if name == "cmnist" else (1e-4, 0.1, 2)
    for branch in (method.intrinsic, method.bias):
        if name == "cmnist":  # MLP_DISENTANGLE: 100-100-16 on inputs / 255, fc Linear(32, C)
            widths = [layer.out_features for layer in branch.encoder.layers if isinstance(layer, torch.nn.Linear)]
            assert widths == [100, 100, 16] and branch.encoder.input_scale == pytest.approx(1 / 255)
        else:  # torchvision ResNet-18 with its ImageNet stem, fc Linear(1024, C)
            assert branch.encoder.conv1.kernel_size == (7, 7)
        assert (branch.head.in_features, branch.head.out_features) == (2 * branch.feature_dim, classes)
    for network in ("intrinsic", "bias"):
        optimizer = method.optimizers[network]
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.defaults["lr"] == lr and optimizer.defaults["weight_decay"] == 0
        factor = method._schedulers[network].scheduler.lr_lambdas[0]
        assert [factor(s) for s in (0, 19_999, 20_000, 30_000, 49_999)] == [1, 1, gamma, gamma**2, gamma**3]
    assert not method.swapping(10_000) and method.swapping(10_001)
    assert run.precision.name == "off"


def test_another_model_drops_the_presets_model_options():
    config = resolve_run_config("disent", dataset="cmnist", model="cnn").config
    assert config.model["name"] == "cnn" and "hidden_sizes" not in config.model
    assert config.method["lambda_dis"] == 10  # the rest of the preset still applies


# -- reference-step equivalence (issue 17 §3) ------------------------------------------------
#
# Our method, driven by the engine (Run.fit), beside a port of the released training step
# (reference/), from the same initial weights, on the batches the engine handed
# our method and with the permutations our method drew. Tolerances are float32 round-off (our
# MLPs multiply inputs by 1/255 where the references divide by 255; Adam magnifies a last-bit
# difference in a near-zero gradient to ~1e-6): 1e-5 is a thousandth of one Adam step at lr 0.01.

TOL = {"rtol": 1e-5, "atol": 1e-5}
DISENT_MLP = ["model.hidden_sizes=[100,100,16]", f"model.input_scale={1 / 255}"]  # MLP_DISENTANGLE's widths
LFF_MLP = ["model.hidden_sizes=[100,100,100]", f"model.input_scale={1 / 255}"]  # LfF's MLP
# Distinct λ's (Adam is blind to a common factor of a network's loss), swapping from step 2 and
# two LR decays within six steps: every term, weight and schedule shows in the weights.
DISENT_SETS = [
    "lambda_dis=3",
    "lambda_swap_b=0.5",
    "lambda_swap=2",
    "curr_step=1",
    "use_lr_decay=true",
    "lr_decay_step=2",
    "lr_gamma=0.5",
]


@dataclass
class Recorded:
    """What the engine handed ``update`` at each step, the torch RNG state before it, and what it returned."""

    batches: list[Batch] = field(default_factory=list)
    rng_states: list[torch.Tensor] = field(default_factory=list)
    logs: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def permutation(self, step: int) -> torch.Tensor:
        """The permutation a ``torch.randperm`` drew at ``step``, as our DisEnt draws its swap."""
        generator = torch.Generator()
        generator.set_state(self.rng_states[step])
        return torch.randperm(len(self.batches[step]), generator=generator)


def fit_recording(run: Run) -> Recorded:
    record = Recorded()
    update = run.method.update

    def spy(batch: Batch, step: int):
        record.batches.append(batch.replace(x=batch.x.clone()))
        record.rng_states.append(torch.get_rng_state())
        logs = update(batch, step)
        record.logs.append(logs)
        return logs

    run.method.update = spy
    run.fit()
    return record


def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """``target`` gets ``source``'s parameters and buffers: the same layers in the same order, other names."""
    src, dst = source.state_dict(), target.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    target.load_state_dict(dict(zip(dst, src.values(), strict=True)))


def assert_same_state(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    for (name, a), (ref_name, b) in zip(ours.state_dict().items(), reference.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=name, r=ref_name: f"{n} vs reference {r}: {m}")


def assert_same_ema(ours: SampleLossEMA, reference) -> None:
    torch.testing.assert_close(ours.loss, reference.parameter, **TOL)
    assert torch.equal(ours.updated, reference.updated)


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("q", [0.7, 0.4], ids=["released-q", "our-q-honoured"])
def test_disent_steps_equal_the_released_learner(tmp_path, one_thread, q):
    """The reference hard-codes q = 0.7; with q = 0.4 it runs its own GeneralizedCELoss(q=0.4)."""
    run = make_run(tmp_path / "run", sets=[*DISENT_SETS, *DISENT_MLP, f"q={q}"], steps=6, seed=3)
    method = run.method
    labels = method.ctx.data.splits["train"].labels
    model_l, model_b = (MLPDisentangle(2, in_features=3 * 8 * 8) for _ in range(2))
    copy_weights(method.intrinsic, model_l)
    copy_weights(method.bias, model_b)
    reference = DisEntReference(
        model_l,
        model_b,
        labels,
        num_classes=2,
        lr=0.01,
        lambda_dis_align=3.0,
        lambda_swap_align=0.5,
        lambda_swap=2.0,
        curr_step=1,
        use_lr_decay=True,
        lr_decay_step=2,
        lr_gamma=0.5,
        q=q,
    )
    record = fit_recording(run)
    assert len(record.batches) == 6 and len(torch.cat([b.index for b in record.batches]).unique()) < 6 * 32
    for step, (batch, logs) in enumerate(zip(record.batches, record.logs, strict=True)):
        loss = reference.step(step, batch.index, batch.x, batch.y, record.permutation(step))
        torch.testing.assert_close(logs["loss"], loss.reshape(()), **TOL, msg=f"loss at step {step}")
        assert ("swap_align" in logs) == (step > 1)
    assert_same_state(method.intrinsic, model_l)
    assert_same_state(method.bias, model_b)
    assert_same_ema(method.difficulty.ema_d, reference.sample_loss_ema_d)  # intrinsic ("conflict")
    assert_same_ema(method.difficulty.ema_b, reference.sample_loss_ema_b)  # bias ("align")
    assert _lr(method.optimizers["intrinsic"]) == _lr(reference.optimizer_l) == 0.01 * 0.5**2
    assert _lr(method.optimizers["bias"]) == _lr(reference.optimizer_b)


def test_disent_resnet_features_equal_the_released_avgpool_hook(tmp_path, one_thread):
    """ResNet-18 branches: our encoder call against the reference's forward hook on avgpool (BatchNorm included)."""
    sets = [*DISENT_SETS, "curr_step=0", "train.batch_size=8"]
    run = make_run(tmp_path / "run", sets=sets, steps=3, seed=4, model="resnet18")
    method = run.method
    # the engine's layout (train.channels_last): the same kernels, so the same float rounding, which Adam
    # would otherwise amplify for gradients near zero
    model_l, model_b = (resnet_disentangle(2).to(memory_format=torch.channels_last) for _ in range(2))
    copy_weights(method.intrinsic, model_l)
    copy_weights(method.bias, model_b)
    reference = DisEntReference(
        model_l,
        model_b,
        method.ctx.data.splits["train"].labels,
        num_classes=2,
        lr=0.01,
        lambda_dis_align=3.0,
        lambda_swap_align=0.5,
        lambda_swap=2.0,
        curr_step=0,
        use_lr_decay=True,
        lr_decay_step=2,
        lr_gamma=0.5,
    )
    record = fit_recording(run)
    for step, batch in enumerate(record.batches):
        reference.step(step, batch.index, batch.x, batch.y, record.permutation(step))
    assert_same_state(method.intrinsic, model_l)
    assert_same_state(method.bias, model_b)
    assert_same_ema(method.difficulty.ema_b, reference.sample_loss_ema_b)


def test_lff_steps_equal_the_released_train_loop(tmp_path, one_thread):
    run = make_run(tmp_path / "run", "lff", sets=[*LFF_MLP, "ema_alpha=0.6"], steps=6, seed=5)
    method = run.method
    model_b, model_d = (LfFMLP(2, in_features=3 * 8 * 8) for _ in range(2))
    copy_weights(method.biased, model_b)
    copy_weights(method.debiased, model_d)
    reference = LfFReference(model_b, model_d, method.ctx.data.splits["train"].labels, 2, lr=0.01, ema_alpha=0.6)
    record = fit_recording(run)
    assert len(record.batches) == 6
    for step, (batch, logs) in enumerate(zip(record.batches, record.logs, strict=True)):
        loss = reference.step(batch.index, batch.x, batch.y)
        torch.testing.assert_close(logs["loss"], loss, **TOL, msg=f"loss at step {step}")
    assert_same_state(method.biased, model_b)
    assert_same_state(method.debiased, model_d)
    assert_same_ema(method.difficulty.ema_b, reference.sample_loss_ema_b)
    assert_same_ema(method.difficulty.ema_d, reference.sample_loss_ema_d)


def test_vanilla_steps_equal_the_released_train_vanilla(tmp_path, one_thread):
    run = make_run(tmp_path / "run", "vanilla", sets=DISENT_MLP, steps=4, seed=6)
    model_b = VanillaMLP(2, in_features=3 * 8 * 8)
    copy_weights(run.method.model, model_b)
    reference = VanillaReference(model_b, lr=0.01)
    record = fit_recording(run)
    for step, (batch, logs) in enumerate(zip(record.batches, record.logs, strict=True)):
        torch.testing.assert_close(logs["loss"], reference.step(batch.x, batch.y), **TOL, msg=f"loss at step {step}")
    assert_same_state(run.method.model, model_b)


# -- precision (issue 17 §2) ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["disent", "lff", "vanilla"])
def test_full_precision_on_gpus_unless_mixed_precision_is_asked_for(tmp_path, monkeypatch, method):
    """The released code is fp32: train.amp=auto resolves to off (on a GPU too); an explicit bf16 still holds."""
    asked: list[str] = []

    def spy(amp: str, device: torch.device) -> Precision:
        asked.append(amp)
        return resolve_precision(amp, device)

    monkeypatch.setattr(engine, "resolve_precision", spy)
    make_run(tmp_path / "auto", method, steps=1)
    make_run(tmp_path / "bf16", method, sets=["train.amp=bf16"], steps=1)
    assert asked == ["off", "bf16"]
    # What the engine then builds on a GPU (resolve_precision reads no CUDA state for these two).
    cuda = torch.device("cuda")
    assert resolve_precision("off", cuda).dtype is None
    assert resolve_precision("bf16", cuda).dtype == torch.bfloat16


@pytest.mark.parametrize("method", ["disent", "lff"])
def test_a_mixed_precision_step_keeps_losses_and_loss_tables_in_float32(tmp_path, method):
    """What --set train.amp=bf16 runs (CPU autocast here): bf16 networks, float32 losses, W and EMA tables."""
    run = make_run(tmp_path / "run", method, sets=["curr_step=0"] if method == "disent" else [])
    with Precision(torch.bfloat16, "cpu").autocast():
        logs = run.method.update(tiny_batch(), step=1)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in logs.values())
    for table in (run.method.difficulty.ema_b, run.method.difficulty.ema_d):
        assert table.loss.dtype == torch.float32 and int(table.updated.sum()) == len(tiny_batch())
