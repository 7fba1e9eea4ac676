"""CLP (robust-clp): the characteristics, the perturbation, the meta-gradient, the metadata
augmentation, masks, checkpoints and presets, against hand computation where possible."""

from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from robust_counterfactual.counterfactual import counterfactual_batch_losses, counterfactual_loss

from robust import hookimpl
from robust.checkpoint import load_checkpoint
from robust.data import ArraySplit, Batch, DatasetInfo
from robust.engine import Run
from robust.errors import ConfigError, DataError
from robust.resolve import resolve_run_config
from robust.results import read_history
from robust.testing import Crash, CrashAt, TinyConfig, TinyDatasetPlugin, load_tiny
from robust_clp.augmentation import MetaBatches
from robust_clp.characteristics import NAMES, ClassStatistics, characteristics
from robust_clp.perturbation import PerturbationNet
from robust_datasets.testing import write_cifar10, write_waterbirds

from .reference.clp_reference import ReleasedCLP, ReleasedMLP

SMALL_BIRDS = ["dataset.scale=0.04", "dataset.image_size=32", "dataset.meta_per_class=4"]
TINY = ["train.batch_size=16", "lr=0.05", "dataset.meta_per_class=8"]


# -- throwaway plugins: a dataset without masks, a mask provider ------------------------------


def load_tiny_without_masks(config: TinyConfig, data_root):
    bundle = load_tiny(config, data_root)
    splits = {k: dataclasses.replace(s, masks=None, bboxes=None) for k, s in bundle.splits.items()}
    return dataclasses.replace(bundle, splits=splits)


PROVIDER_CALLS: list[int] = []


def top_half_provider(images: torch.Tensor) -> torch.Tensor:
    """Foreground = the top half of the image (where tiny draws its class feature)."""
    PROVIDER_CALLS.append(len(images))
    n, _, h, w = images.shape
    masks = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    masks[:, :, : h // 2] = 255
    return masks


def l_shape_provider(images: torch.Tensor) -> torch.Tensor:
    """An L-shaped foreground (not its own rectangle, so CF and F images differ in shape)."""
    n, _, h, w = images.shape
    masks = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    masks[:, :, 1 : h // 2 + 1, 1:3] = 255
    masks[:, :, h // 2 - 1 : h // 2 + 1, 1 : w - 2] = 255
    return masks


def broken_provider(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(images), 1, 3, 3, dtype=torch.uint8)


class MaskPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("tiny-nomask", load_tiny_without_masks, config=TinyConfig, default_model="mlp")

    @hookimpl
    def register_mask_providers(self, register):
        register("top-half", top_half_provider, description="the top half of the image")
        register("l-shape", l_shape_provider, description="an L in the top left")
        register("broken", broken_provider, description="returns masks of the wrong size")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plugins(register_plugin):
    with register_plugin(TinyDatasetPlugin(), "tiny-test-plugin"), register_plugin(MaskPlugin(), "clp-test-plugin"):
        yield


def make_run(
    out: Path, dataset: str = "tiny", sets=(), resume: bool = False, quiet: bool = True, model=None, **flags
) -> Run:
    flags.setdefault("steps", 4)
    resolved = resolve_run_config("clp", dataset=dataset, model=model, sets=[*TINY, *sets], flags=flags)
    return Run(resolved, out, resume=resume, quiet=quiet)


def first_batch(run: Run, n: int = 24) -> Batch:
    loader = run._train_loader(run.method.phases()[0])
    return next(loader.batches(torch.arange(n)))


# -- the ten characteristics ------------------------------------------------------------------


def test_each_characteristic_on_a_hand_computed_batch():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    features = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    weight = torch.tensor([[1.0, 1.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1])
    prior = torch.tensor([0.5, 0.3, 0.2])
    class_loss = torch.tensor([5.0, 4.0, 3.0])
    class_margin = torch.tensor([1.0, 0.5, 0.25])
    out = characteristics(logits, features, weight, labels, prior, class_loss, class_margin)
    assert out.shape == (2, 10)
    got = {name: out[:, i].tolist() for i, name in enumerate(NAMES)}

    e2 = math.exp(2)
    p0 = [e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2)]  # softmax([2, 0, 0])
    s1 = 1 + math.e + math.exp(3)
    p1 = [1 / s1, math.e / s1, math.exp(3) / s1]  # softmax([0, 1, 3])
    loss = [-math.log(p0[0]), -math.log(p1[1])]
    margin = [p0[0] - p0[1], p1[1] - p1[2]]  # label prob minus the largest other
    expected = {
        "loss": loss,
        "margin": margin,
        "grad_norm": [math.sqrt(sum((1 - q) ** 2 for q in p)) for p in (p0, p1)],
        "cosine": [1 / math.sqrt(2), 8 / (5 * 2)],  # cos((1,0),(1,1)); cos((3,4),(0,2))
        "neg_entropy": [sum(q * math.log(q) for q in p) for p in (p0, p1)],
        "class_prior": [0.5, 0.3],
        "class_loss": [5.0, 4.0],
        "class_weight_norm": [math.sqrt(2), 2.0],
        "relative_loss": [loss[0] - 5.0, loss[1] - 4.0],
        "relative_margin": [margin[0] - 1.0, margin[1] - 0.5],
    }
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    assert margin[1] < 0  # a misclassified sample has a negative margin
    # Inputs, not gradient paths.
    z = logits.clone().requires_grad_(True)
    assert not characteristics(z, features, weight, labels, prior, class_loss, class_margin).requires_grad


def test_class_statistics_start_at_5_and_1_and_roll_over_per_epoch():
    stats = ClassStatistics(torch.tensor([0.5, 0.25, 0.25]))
    assert stats.class_loss.tolist() == [5.0, 5.0, 5.0] and stats.class_margin.tolist() == [1.0, 1.0, 1.0]
    stats.accumulate(torch.tensor([0, 0, 1]), torch.tensor([1.0, 3.0, 0.5]), torch.tensor([0.2, 0.4, -0.1]))
    stats.accumulate(torch.tensor([1]), torch.tensor([1.5]), torch.tensor([0.3]))
    assert stats.class_loss.tolist() == [5.0, 5.0, 5.0]  # the previous epoch's values until the epoch ends
    stats.roll()
    assert stats.class_loss.tolist() == pytest.approx([2.0, 1.0, 5.0])  # class 2 unseen: keeps its value
    assert stats.class_margin.tolist() == pytest.approx([0.3, 0.1, 1.0])
    assert stats.count.sum() == 0 and stats.loss_sum.sum() == 0  # the new epoch starts from zero
    assert "class_loss" in stats.state_dict() and "prior" not in stats.state_dict()


# -- the perturbation -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["vector", "label_only"])
def test_the_perturbation_changes_the_loss_and_reaches_the_network(mode):
    torch.manual_seed(0)
    net = PerturbationNet(4, mode)
    features, labels = torch.randn(16, 10), torch.randint(0, 4, (16,))
    logits = torch.randn(16, 4)
    delta = net(features, labels)
    assert delta.shape == (16, 4) and delta.abs().max() < 1  # tanh-bounded
    if mode == "label_only":  # only the label's logit moves
        assert torch.equal(delta != 0, F.one_hot(labels, 4).bool() & (delta != 0))
    perturbed = F.cross_entropy(logits + delta, labels)
    assert abs(perturbed.item() - F.cross_entropy(logits, labels).item()) > 1e-4
    grads = torch.autograd.grad(perturbed, list(net.parameters()))
    assert sum(g.abs().sum() for g in grads) > 0


def test_the_released_scalar_broadcast_would_not_change_the_loss():
    """The reference adds ONE scalar to every logit: softmax is shift-invariant, so CE and its
    gradient with respect to the network are exactly those of the plain logits."""
    torch.manual_seed(0)
    hidden = torch.nn.Sequential(torch.nn.BatchNorm1d(10), torch.nn.Linear(10, 100), torch.nn.ReLU())
    head = torch.nn.Linear(100, 1)
    features, labels = torch.randn(16, 10, dtype=torch.float64), torch.randint(0, 4, (16,))
    hidden, head = hidden.double(), head.double()
    logits = torch.randn(16, 4, dtype=torch.float64)
    scalar = torch.tanh(head(hidden(features)))  # (16, 1), broadcast over the classes
    assert scalar.abs().min() > 1e-3  # a real, non-zero perturbation
    broadcast = F.cross_entropy(logits + scalar, labels)
    assert broadcast.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-12)
    grads = torch.autograd.grad(broadcast, [*hidden.parameters(), *head.parameters()], allow_unused=True)
    assert all(g is None or g.abs().max() < 1e-12 for g in grads)


# -- the meta-gradient ----------------------------------------------------------------------


def _meta_gradient(method, batch: Batch, mode: str):
    at = method.at_theta(batch)
    meta_batch = method.meta_batches.next()
    meta_batch = meta_batch.replace(x=meta_batch.x.to(at.z.dtype))
    fn = method.unrolled_meta_gradient if mode == "unrolled" else method.jvp_meta_gradient
    rng = torch.get_rng_state()
    grads, logs = fn(at, meta_batch)
    torch.set_rng_state(rng)
    return grads, logs


@pytest.mark.parametrize("perturb_mode", ["vector", "label_only"])
def test_virtual_step_is_differentiable_in_phi_and_both_meta_gradients_agree(tmp_path, perturb_mode):
    run = make_run(tmp_path / "run", sets=[f"perturb_mode={perturb_mode}", "cf_infill=mean", "f_infill=none"])
    method = run.method.double()
    batch = first_batch(run)
    batch = batch.replace(x=batch.x.double())
    state = copy.deepcopy(method.state_dict())
    unrolled, logs_u = _meta_gradient(method, batch, "unrolled")
    method.load_state_dict(state)
    jvp, logs_j = _meta_gradient(method, batch, "jvp")
    assert logs_u["meta_cf"] > 0 and logs_u["meta_sal"] > 0  # CF images and the saliency term are in the loss
    assert logs_u["meta_loss"] == pytest.approx(logs_j["meta_loss"].item(), rel=1e-12)
    total = sum(float(g.abs().sum()) for g in unrolled if g is not None)
    assert total > 0, "the meta loss must reach the perturbation network through the virtual step"
    for a, b in zip(unrolled, jvp, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("meta_grad", ["jvp", "unrolled"])
def test_the_meta_step_trains_phi_and_the_real_step_trains_theta(tmp_path, meta_grad):
    run = make_run(tmp_path / "run", sets=[f"meta_grad={meta_grad}"])
    method = run.method
    batch = first_batch(run)
    net = method.perturbation
    phi0 = [p.detach().clone() for p in net.parameters()]
    theta0 = [p.detach().clone() for p in method.model.parameters()]
    logs = method.update(batch, 0)
    assert net is method.perturbation  # built once
    assert any(not torch.equal(a, b) for a, b in zip(phi0, net.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(theta0, method.model.parameters(), strict=True))
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in method.model.parameters())
    assert logs["delta"] > 0 and torch.isfinite(logs["loss"])
    assert method.optimizers["meta"].state, "Adam on phi has taken a step"
    # No perturbation at evaluation.
    assert torch.equal(method.predict(batch.x), method.model(batch.x))


def test_differentiable_characteristics_is_the_released_virtual_step(tmp_path):
    """The released virtual step does not detach the characteristics: ∂θ'/∂φ then also has the
    path θ → c(θ) → P_φ(c) through the virtual gradient, and the meta-gradient changes."""
    sets = ["meta_grad=unrolled", "cf_infill=mean", "f_infill=none", "differentiable_characteristics=true"]
    run = make_run(tmp_path / "run", sets=sets)
    method = run.method.double()
    batch = first_batch(run)
    batch = batch.replace(x=batch.x.double())
    at = method.at_theta(batch)
    assert at.live_features is not None and at.live_features.requires_grad and not at.features.requires_grad
    assert torch.equal(at.live_features.detach(), at.features)
    state = copy.deepcopy(method.state_dict())
    live, _ = _meta_gradient(method, batch, "unrolled")
    method.load_state_dict(state)
    method.config.differentiable_characteristics = False
    detached, _ = _meta_gradient(method, batch, "unrolled")
    difference = sum(float((a - b).abs().sum()) for a, b in zip(live, detached, strict=True))
    assert difference > 1e-3 * sum(float(a.abs().sum()) for a in detached)


def test_differentiable_characteristics_needs_the_unrolled_meta_gradient(tmp_path):
    with pytest.raises(ConfigError, match="meta_grad=unrolled"):
        make_run(tmp_path / "run", sets=["differentiable_characteristics=true"])


def test_batchnorm_statistics_are_updated_once_per_step(tmp_path):
    run = make_run(tmp_path / "run", model="cnn")
    method = run.method
    batch = first_batch(run)
    reference = copy.deepcopy(method.model)
    reference(batch.x)  # one train-mode forward of the training batch
    method.update(batch, 0)
    buffers = dict(method.model.named_buffers())
    assert any("running_mean" in n for n in buffers)
    for name, expected in reference.named_buffers():
        assert torch.allclose(buffers[name].float(), expected.float(), atol=1e-6), name


def test_meta_loss_is_normalised_by_the_enlarged_batch():
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    cf_logits, removed = torch.randn(2, 3), torch.randint(0, 3, (2,))
    ce, cf = counterfactual_batch_losses(logits, labels, cf_logits, removed)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item() / 8, rel=1e-5)
    p = cf_logits.softmax(1).gather(1, removed[:, None]).squeeze(1)
    assert cf.item() == pytest.approx((-torch.log1p(-p)).sum().item() / 8, rel=1e-5)
    assert torch.allclose(counterfactual_loss(cf_logits, removed), -torch.log1p(-p), atol=1e-6)
    alone, zero = counterfactual_batch_losses(logits, labels)
    assert alone.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6) and zero == 0


def test_meta_batches_cover_each_pass_in_a_new_order_and_resume():
    n = 10
    split = ArraySplit(
        labels=torch.arange(n) % 2,
        images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
    )
    info = DatasetInfo(
        name="m",
        num_classes=2,
        input_shape=(1, 2, 2),
        class_names=["a", "b"],
        group_names=["a", "b"],
        mean=(0.0,),
        std=(1.0,),
    )
    stream = MetaBatches(split, info, torch.device("cpu"), batch_size=4, seed=3)
    batches = [stream.next().index.tolist() for _ in range(4)]
    first, second = batches[0] + batches[1], batches[2] + batches[3]
    assert len(set(first)) == 8 and len(set(second)) == 8  # full batches, no repeat within a pass
    assert first != second  # each pass is reshuffled
    again = MetaBatches(split, info, torch.device("cpu"), batch_size=4, seed=3)
    again.load_state_dict(stream.state_dict())
    assert again.next().index.tolist() == stream.next().index.tolist()
    small = MetaBatches(split, info, torch.device("cpu"), batch_size=32, seed=3)
    assert sorted(small.next().index.tolist()) == list(range(n))  # a meta set smaller than a batch


# -- runs, masks and checkpoints ------------------------------------------------------------


def test_perturbation_net_is_built_once_and_checkpointed(tmp_path):
    run = make_run(tmp_path / "run", steps=5)
    net = run.method.perturbation
    seen = []
    original = run.method.update

    def spy(batch, step):
        seen.append(run.method.perturbation)
        return original(batch, step)

    run.method.update = spy
    run.fit()
    assert len(seen) == 5 and all(s is net for s in seen)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["method"]
    for name, value in net.state_dict().items():
        assert torch.equal(state["modules"][f"perturbation.{name}"], value), name
    assert state["optimizers"]["meta"]["state"], "phi's Adam state is saved"
    assert int(state["modules"]["meta_batches.cursor"]) > 0
    assert "statistics.class_loss" in state["modules"]
    # 4 steps per epoch (68 samples after the meta set, batch 16, the last 4 dropped): one roll-over so far.
    assert (state["modules"]["statistics.class_loss"] != 5.0).all()


def test_resume_mid_epoch_equals_uninterrupted(tmp_path, register_plugin):
    sets = ["train.eval_every_steps=2", "train.checkpoint_every_steps=1"]
    full = make_run(tmp_path / "full", sets=sets, steps=8, seed=1).fit()
    with register_plugin(CrashAt(evaluation=3), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "cut", sets=sets, steps=8, seed=1).fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["engine"]["batch"] > 0
    resumed = make_run(tmp_path / "cut", sets=sets, steps=8, seed=1, resume=True).fit()
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["method"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["method"]
    for key, value in a["modules"].items():  # classifier, perturbation net, class statistics, meta stream
        assert torch.equal(value, b["modules"][key]), key
    assert resumed["selection"]["last"]["metrics"] == full["selection"]["last"]["metrics"]


@pytest.mark.parametrize("augment", [True, False])
def test_runs_on_synthetic_waterbirds_with_and_without_augmentation(tmp_path, augment):
    sets = [*SMALL_BIRDS] if augment else [*SMALL_BIRDS, "cf_infill=none", "f_infill=none", "lambda_=0"]
    resolved = resolve_run_config("clp", dataset="synthetic-waterbirds", sets=sets, flags={"epochs": 1})
    assert resolved.config.preset == "synthetic-waterbirds" and resolved.config.model_name == "cnn"
    run = Run(resolved, tmp_path / "run", quiet=True)
    assert run.method.meta_masks == augment and run.method.train_saliency == augment
    summary = run.fit()
    metrics = summary["selection"]["last"]["metrics"]
    assert 0 <= metrics["test/worst_group_acc"] <= metrics["test/avg_acc"] <= 1
    history = read_history(tmp_path / "run" / "history.h5")
    assert (history["train/meta_cf"][-1] > 0) == augment
    assert (history["train/sal"][-1] > 0) == augment
    assert history["train/delta"][-1] > 0


def test_without_masks_clp_refuses_to_start_and_says_how_to_give_them(tmp_path):
    with pytest.raises(ConfigError) as refused:
        make_run(tmp_path / "run", dataset="tiny-nomask")
    text = str(refused.value)
    for needed in ("training set and meta set", "mask_provider", "allow_no_masks=true", "counterfactual", "saliency"):
        assert needed in text, needed
    # The CF/F images need the meta set's masks only; the saliency term also the training set's.
    with pytest.raises(ConfigError, match="the meta set of") as refused:
        make_run(tmp_path / "run2", dataset="tiny-nomask", sets=["lambda_=0"])
    assert "training set" not in str(refused.value) and "saliency" not in str(refused.value)
    with pytest.raises(ConfigError, match="training set and meta set"):
        make_run(tmp_path / "run3", dataset="tiny-nomask", sets=["cf_infill=none", "f_infill=none"])


def test_without_the_mask_based_parts_no_masks_are_needed(tmp_path):
    sets = ["cf_infill=none", "f_infill=none", "lambda_=0"]
    run = make_run(tmp_path / "run", dataset="tiny-nomask", sets=sets)
    assert not run.method.meta_masks and not run.method.train_saliency and run.method.ctx.opt_outs == []


def test_allow_no_masks_is_an_opt_out_recorded_in_the_summary(tmp_path):
    run = make_run(tmp_path / "run", dataset="tiny-nomask", sets=["allow_no_masks=true"], steps=2)
    assert not run.method.meta_masks and not run.method.train_saliency
    logs = run.method.update(first_batch(run), 0)
    assert logs["meta_cf"] == 0 and logs["meta_sal"] == 0 and logs["sal"] == 0
    summary = run.fit()
    (opt_out,) = summary["opt_outs"]
    assert opt_out["option"] == "allow_no_masks" and "tiny-nomask" in opt_out["detail"]
    # With masks there is nothing to opt out of.
    assert make_run(tmp_path / "masked", sets=["allow_no_masks=true"]).method.ctx.opt_outs == []


def test_a_mask_provider_supplies_the_meta_and_training_masks(tmp_path, capsys):
    PROVIDER_CALLS.clear()
    run = make_run(tmp_path / "run", dataset="tiny-nomask", sets=["dataset.mask_provider=top-half"], quiet=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "no foreground masks" not in err
    assert sum(PROVIDER_CALLS) == len(run.data.aux["meta"]) + len(run.data.splits["train"])
    assert run.method.meta_masks and run.method.train_saliency
    train_masks = run.data.splits["train"].masks  # the engine's loader augments these with the images
    assert train_masks is not None and (train_masks[:, :, :4] == 255).all() and (train_masks[:, :, 4:] == 0).all()
    meta = run.method.meta_batches.next()
    assert meta.mask is not None and (meta.mask[:, :, :4] == 1).all() and (meta.mask[:, :, 4:] == 0).all()
    logs = run.method.update(first_batch(run), 0)
    assert logs["meta_cf"] > 0 and logs["sal"] > 0
    with pytest.raises(DataError, match="shape"):
        make_run(tmp_path / "run3", dataset="tiny-nomask", sets=["dataset.mask_provider=broken"])


def test_mask_providers_are_listed():
    from robust.cli import cli

    result = CliRunner().invoke(cli, ["list", "mask-providers", "--json"])
    assert result.exit_code == 0, result.output
    assert '"top-half"' in result.output


def test_a_dataset_without_a_meta_set_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="meta_per_class"):
        make_run(tmp_path / "run", sets=["dataset.meta_per_class=null"])


# -- presets, the optimiser, the plugin -------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "sets", "preset"),
    [
        ("cifar10-lt", ["dataset.imb_factor=10"], "cifar10-lt-10"),
        ("cifar100-lt", [], "cifar100-lt-100"),
        ("cifar10-noisy", ["dataset.corruption_type=flip2", "dataset.corruption_ratio=0.2"], "cifar10-noisy-flip2-0.2"),
        ("cifar100-noisy", [], "cifar100-noisy-unif-0.4"),
        ("waterbirds", [], "waterbirds"),
        ("imagenet-glt", [], "imagenet-glt"),
        ("synthetic-waterbirds", [], "synthetic-waterbirds"),
    ],
)
def test_preset_is_picked_from_the_dataset(dataset, sets, preset):
    assert resolve_run_config("clp", dataset=dataset, sets=sets).config.preset == preset


def test_reference_settings_of_the_cifar_presets():
    config = resolve_run_config("clp", dataset="cifar10-lt", sets=["dataset.imb_factor=10"]).config
    m = config.method
    assert (m["optimizer"], m["lr"], m["momentum"], m["nesterov"], m["weight_decay"]) == ("sgd", 0.1, 0.9, True, 5e-4)
    assert (m["schedule"], m["milestones"], m["gamma"]) == ("step", [160, 180], 0.01)
    assert (m["meta_lr"], m["meta_weight_decay"], m["lambda_"]) == (1e-3, 1e-4, 0.5)
    assert (config.train.epochs, config.train.batch_size, config.model_name) == (200, 128, "resnet32")
    assert (config.dataset["recipe"], config.dataset["imb_factor"], config.dataset["seed"]) == ("clp", 10.0, 100)
    assert m["meta_augment"] is True and config.train.augment == "crop_flip_reflect"
    birds = resolve_run_config("clp", dataset="waterbirds").config
    assert birds.model == {"name": "resnet50", "weights": "IMAGENET1K_V1", "small_input_stem": False}
    assert birds.dataset["meta_per_class"] == 50


def is_reflect_crop(augmented: torch.Tensor, original: torch.Tensor, pad: int) -> bool:
    """Whether ``augmented`` (uint8 values, C x H x W) is a window of ``original`` reflect-padded by
    ``pad`` (torchvision's ``RandomCrop(padding_mode="reflect")``), possibly mirrored."""
    h, w = original.shape[-2:]
    padded = np.pad(original.numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    target = augmented.numpy()
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[:, dy : dy + h, dx : dx + w]
            if np.array_equal(window, target) or np.array_equal(window[:, :, ::-1], target):
                return True
    return False


def pixels(batch: Batch, info: DatasetInfo) -> torch.Tensor:
    """A normalised batch back to uint8 values."""
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    return (batch.x * std + mean).mul(255).round().to(torch.uint8)


CIFAR_RUN = ["dataset.imb_factor=10", "dataset.num_meta=20", "train.batch_size=16", "preset=cifar10-lt-10"]


def test_the_cifar_preset_crops_with_reflection_augments_the_meta_set_and_needs_masks(tmp_path):
    """CLP_train.py on CIFAR: RandomCrop(32, padding=4, padding_mode='reflect') and a flip, on the
    training images and (its meta set being a copy of the training dataset) the meta images."""
    write_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    flags = {"data_root": str(tmp_path / "data"), "steps": 1}

    def cifar_run(name: str, *sets: str) -> Run:
        resolved = resolve_run_config("clp", dataset="cifar10-lt", model="cnn", sets=[*CIFAR_RUN, *sets], flags=flags)
        return Run(resolved, tmp_path / name, quiet=True)

    with pytest.raises(ConfigError, match="mask_provider=NAME") as refused:
        cifar_run("refused")
    assert "image-matting" in str(refused.value) and "allow_no_masks=true" in str(refused.value)
    opted_out = cifar_run("opted-out", "allow_no_masks=true").method
    assert [o["option"] for o in opted_out.ctx.opt_outs] == ["allow_no_masks"] and not opted_out.meta_masks

    run = cifar_run("run", "dataset.mask_provider=top-half")
    method, info = run.method, run.info
    meta = method.meta_batches.next()
    originals = method.meta_batches.split.images[meta.index]
    loader = run._train_loader(method.phases()[0])
    batch = next(loader.batches(torch.arange(16), generator=torch.Generator().manual_seed(0)))
    train_originals = run.data.splits["train"].images[batch.index]
    for augmented, source in ((pixels(meta, info), originals), (pixels(batch, info), train_originals)):
        assert not torch.equal(augmented, source)  # cropped and flipped ...
        assert all(is_reflect_crop(a, o, 4) for a, o in zip(augmented, source, strict=True))  # ... reflected
    logs = method.update(batch, 0)
    assert logs["meta_cf"] > 0 and logs["sal"] > 0 and logs["meta_sal"] > 0 and method.ctx.opt_outs == []


def test_the_cifar_preset_is_picked_with_a_mask_provider():
    sets = ["dataset.imb_factor=10", "dataset.mask_provider=top-half"]
    assert resolve_run_config("clp", dataset="cifar10-lt", sets=sets).config.preset == "cifar10-lt-10"


def test_the_waterbirds_preset_trains_with_the_cub_segmentations(tmp_path):
    write_waterbirds(tmp_path / "data")
    sets = ["dataset.meta_per_class=1", "dataset.image_size=16", "train.batch_size=4"]
    flags = {"data_root": str(tmp_path / "data"), "steps": 1}
    resolved = resolve_run_config("clp", dataset="waterbirds", model="cnn", sets=sets, flags=flags)
    assert resolved.config.preset == "waterbirds"
    run = Run(resolved, tmp_path / "run", quiet=True)
    method = run.method
    assert method.meta_masks and method.train_saliency and method.ctx.opt_outs == []
    loader = run._train_loader(method.phases()[0])
    logs = method.update(next(loader.batches(torch.arange(4), generator=torch.Generator().manual_seed(0))), 0)
    assert logs["meta_cf"] > 0 and logs["sal"] > 0 and logs["meta_sal"] > 0


def test_erm_sgd_takes_nesterov():
    from robust.erm import ERMConfig, make_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert make_optimizer(params, ERMConfig(nesterov=True)).param_groups[0]["nesterov"] is True
    assert make_optimizer(params, ERMConfig()).param_groups[0]["nesterov"] is False
    with pytest.raises(ConfigError, match="momentum"):
        make_optimizer(params, ERMConfig(nesterov=True, momentum=0.0))


def test_plugin_module_is_torch_free_and_registers_clp():
    code = (
        "import sys, robust_clp.plugin\n"
        "from robust.registry import get_registry\n"
        "entry = get_registry().get('method', 'clp')\n"
        "assert entry.plugin == 'clp', entry.plugin\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- reference-step equivalence: the released CLP_train.py step (reference/) ---------------

# case: (our options, model, the reference's switches). "released": our options set to the
# released behaviour (characteristics not detached in the virtual step, unrolled meta-gradient,
# plain meta images: the release's composition returns the originals). The other two: our
# defaults (detached characteristics, the paper's CF and F meta images), by both meta-gradients.
REFERENCE_CASES = {
    "released": (
        ["differentiable_characteristics=true", "meta_grad=unrolled", "cf_infill=none", "f_infill=none"],
        "cnn",
        {"detach_virtual": False},
    ),
    "cf-f-unrolled": (
        ["meta_grad=unrolled", "cf_infill=mean", "f_infill=shuffle"],
        "mlp",
        {"detach_virtual": True, "paper_meta_infills": ("mean", "shuffle")},
    ),
    "cf-f-jvp": (
        ["meta_grad=jvp", "cf_infill=mean", "f_infill=shuffle"],
        "mlp",
        {"detach_virtual": True, "paper_meta_infills": ("mean", "shuffle")},
    ),
}
REFERENCE_RTOL, REFERENCE_ATOL = 1e-9, 1e-12


def reference_beside(method, options: dict) -> ReleasedCLP:
    """The released step from the same initial weights (classifier, perturbation network)."""
    c = method.config
    meta_net = ReleasedMLP(method.ctx.num_classes, hidden_size=c.meta_hidden_size, num_layers=c.meta_num_layers)
    ours = method.perturbation.state_dict()
    assert [v.shape for v in meta_net.state_dict().values()] == [v.shape for v in ours.values()]
    meta_net.load_state_dict(dict(zip(meta_net.state_dict(), ours.values(), strict=True)))
    return ReleasedCLP(
        copy.deepcopy(method.model),
        meta_net.double(),
        method.statistics.prior,
        lr=c.lr,
        momentum=c.momentum,
        nesterov=c.nesterov,
        weight_decay=c.weight_decay,
        meta_lr=c.meta_lr,
        meta_weight_decay=c.meta_weight_decay,
        lambda_=c.lambda_,
        **options,
    )


def run_beside_reference(tmp_path: Path, case: str, extra_sets=()):
    """Six steps (an epoch of four, the class statistics rolled over, two more) of our update and of
    the released step, on the same batches, meta batches and random draws, in float64."""
    sets, model, options = REFERENCE_CASES[case]
    run = make_run(
        tmp_path / "run", dataset="tiny-nomask", model=model, sets=["dataset.mask_provider=l-shape", *sets, *extra_sets]
    )
    method = run.method.double()
    reference = reference_beside(method, options)
    loader = run._train_loader(method.phases()[0])
    order = torch.randperm(len(loader), generator=torch.Generator().manual_seed(0))[:64]
    batches = list(loader.batches(order, generator=torch.Generator().manual_seed(1)))  # cropped and flipped
    draw = method.meta_batches.next
    logs = []
    for step, batch in enumerate([*batches, *batches[:2]]):
        if step == len(batches):
            method.on_epoch_end(0)
            reference.end_epoch()
        meta = draw()
        meta = meta.replace(x=meta.x.double())
        method.meta_batches.next = lambda meta=meta: meta
        batch = batch.replace(x=batch.x.double())
        torch.manual_seed(100 + step)
        logs.append(method.update(batch, step))
        torch.manual_seed(100 + step)
        reference.step(batch.x, batch.y, batch.mask, meta.x, meta.y, meta.mask)
    return method, reference, logs


def assert_same_state(method, reference: ReleasedCLP) -> None:
    close = {"rtol": REFERENCE_RTOL, "atol": REFERENCE_ATOL}
    pairs = zip(method.model.state_dict().items(), reference.model.state_dict().values(), strict=True)
    for (name, ours), theirs in pairs:
        torch.testing.assert_close(ours, theirs, **close, msg=lambda m, name=name: f"classifier {name}: {m}")
    pairs = zip(method.perturbation.state_dict().items(), reference.meta_net.state_dict().values(), strict=True)
    for (name, ours), theirs in pairs:
        torch.testing.assert_close(ours, theirs, **close, msg=lambda m, name=name: f"perturbation {name}: {m}")
    stats = method.statistics
    for ours, theirs in (
        (stats.class_loss, reference.class_loss),
        (stats.class_margin, reference.class_margin),
        (stats.loss_sum, reference.loss_total),
        (stats.margin_sum, reference.margin_total),
        (stats.count, reference.class_total),
    ):
        torch.testing.assert_close(ours, theirs, **close)


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_steps_equal_the_released_step(tmp_path, case):
    """Classifier, perturbation network (weights and BatchNorm buffers) and class statistics after
    six steps equal the port of the released step's, to 1e-9 relative in float64."""
    method, reference, logs = run_beside_reference(tmp_path, case)
    assert_same_state(method, reference)
    # Not vacuous: every part moved and every term was in play.
    assert (method.statistics.class_loss != 5.0).all() and method.statistics.count.sum() == 2 * 16
    assert all(log["sal"] > 0 and log["meta_sal"] > 0 and log["delta"] > 0.01 for log in logs)
    assert all((log["meta_cf"] > 0) == (case != "released") for log in logs)


# -- mechanism details that mutation testing found untested -------------------------------------


def meta_info() -> DatasetInfo:
    """The info of the 2-class, 1x2x2 meta sets of the tests below (mean 0, std 1: batches are images / 255)."""
    return DatasetInfo(
        name="m", num_classes=2, input_shape=(1, 2, 2), class_names=["a", "b"], group_names=[], mean=(0.0,), std=(1.0,)
    )


def test_class_prior_is_the_training_label_frequency():
    from robust_clp.characteristics import class_prior

    prior = class_prior(torch.tensor([0, 0, 0, 2]), 4)
    assert prior.tolist() == [0.75, 0.0, 0.25, 0.0]
    assert class_prior(torch.tensor([], dtype=torch.long), 2).tolist() == [0.0, 0.0]
    assert class_prior(torch.tensor([1]), 2).tolist() == [0.0, 1.0]


def test_each_infill_gets_its_own_options_and_any_one_switches_the_augmentation_on():
    from robust_clp.augmentation import MetadataAugmentation

    def augmentation(cf: str, f: str) -> MetadataAugmentation:
        return MetadataAugmentation(cf, f, (0.0,), (1.0,), fgsm_eps=0.3, fgsm_alpha=0.1, noise_std=0.7)

    aug = augmentation("none", "none")
    assert not aug.enabled
    assert aug._options("fgsm") == {"eps": 0.3, "alpha": 0.1}
    assert aug._options("random") == {"noise_std": 0.7}
    assert all(aug._options(name) == {} for name in ("mean", "shuffle", "tile", "mrand"))
    for f in ("random", "shuffle", "mrand", "fgsm"):  # the factual images alone switch it on
        assert augmentation("none", f).enabled, f
    for cf in ("mean", "random", "shuffle", "tile"):
        assert augmentation(cf, "none").enabled, cf


def test_a_meta_set_of_whole_batches_is_used_whole_before_the_next_pass():
    n = 8
    split = ArraySplit(labels=torch.arange(n) % 2, images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8))
    info = meta_info()
    stream = MetaBatches(split, info, torch.device("cpu"), batch_size=4, seed=0)
    for _ in range(3):  # each pass: both batches, every image once
        assert sorted(stream.next().index.tolist() + stream.next().index.tolist()) == list(range(n))


def test_a_streamed_meta_set_keeps_its_masks_in_memory():
    from robust.data import StreamSplit
    from robust_clp.augmentation import in_memory

    class Stream(StreamSplit):
        def __len__(self):
            return 3

        def read(self, i):
            return torch.full((1, 2, 2), i, dtype=torch.uint8), torch.full((1, 2, 2), 255 * (i % 2), dtype=torch.uint8)

    split = in_memory(Stream(labels=torch.tensor([0, 1, 0])))
    assert split.masks is not None and split.masks[:, 0, 0, 0].tolist() == [0, 255, 0]
    assert split.images[:, 0, 0, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("meta_grad", ["jvp", "unrolled"])
def test_a_parameter_outside_the_forward_does_not_stop_a_step(tmp_path, meta_grad):
    """Models may hold parameters the forward does not use (an auxiliary head, a frozen branch): the
    virtual step, the saliency gradient and the meta-gradient treat them as having no gradient."""
    run = make_run(tmp_path / "run", sets=[f"meta_grad={meta_grad}", "cf_infill=mean", "lambda_=1.0"])
    method = run.method
    method.model.register_parameter("auxiliary", torch.nn.Parameter(torch.zeros(3)))
    logs = method.update(first_batch(run), 0)
    assert torch.isfinite(logs["loss"]) and method.model.auxiliary.grad is None


def test_the_logged_loss_is_the_real_steps_objective_and_lambda_zero_computes_no_saliency(tmp_path):
    run = make_run(tmp_path / "on", sets=["cf_infill=mean", "lambda_=0.5"])
    logs = run.method.update(first_batch(run), 0)
    assert logs["sal"] > 0 and logs["meta_sal"] > 0
    assert logs["loss"].item() == pytest.approx((logs["ce"] + 0.5 * logs["sal"]).item(), rel=1e-6)
    off = make_run(tmp_path / "off", sets=["cf_infill=mean", "lambda_=0"])
    logs = off.method.update(first_batch(off), 0)
    assert logs["sal"] == 0 and logs["meta_sal"] == 0, "λ = 0: no input-gradient pass, in either step"


def test_a_training_batch_without_foreground_has_no_saliency_term(tmp_path):
    run = make_run(tmp_path / "run", sets=["lambda_=1.0"])
    batch = first_batch(run)
    assert run.method.forward_train(batch)[2] is not None
    logits, features, sal = run.method.forward_train(batch.replace(mask=torch.zeros_like(batch.mask)))
    assert sal is None and logits.shape == (len(batch), 2) and features.shape[0] == len(batch)


def test_a_class_seen_once_rolls_over_to_its_one_value_and_the_prior_is_not_checkpointed_data():
    stats = ClassStatistics(torch.tensor([0.5, 0.5]))
    stats.accumulate(torch.tensor([1]), torch.tensor([0.7]), torch.tensor([-0.2]))
    stats.roll()
    assert stats.class_loss.tolist() == pytest.approx([5.0, 0.7]) and stats.class_margin.tolist() == pytest.approx(
        [1.0, -0.2]
    )


def test_characteristics_are_detached_unless_asked_for_their_graph():
    torch.manual_seed(0)
    logits, features = torch.randn(4, 3, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    weight, labels = torch.randn(3, 5, requires_grad=True), torch.tensor([0, 1, 2, 0])
    stats = ClassStatistics(torch.full((3,), 1 / 3))
    assert not stats.characteristics(logits, features, weight, labels).requires_grad
    assert stats.characteristics(logits, features, weight, labels, differentiable=True).requires_grad


def test_a_streamed_meta_set_without_masks_has_none():
    from robust.data import StreamSplit
    from robust_clp.augmentation import in_memory

    class Stream(StreamSplit):
        def __len__(self):
            return 2

        def read(self, i):
            return torch.zeros((1, 2, 2), dtype=torch.uint8), None

    assert in_memory(Stream(labels=torch.tensor([0, 1]))).masks is None


def test_an_empty_meta_set_is_refused_and_one_image_is_a_batch():
    info = meta_info()

    def split(n):
        return ArraySplit(labels=torch.zeros(n, dtype=torch.long), images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8))

    with pytest.raises(DataError, match="meta set is empty"):
        MetaBatches(split(0), info, torch.device("cpu"), batch_size=4, seed=0)
    one = MetaBatches(split(1), info, torch.device("cpu"), batch_size=4, seed=0)
    assert one.next().index.tolist() == [0] and one.next().index.tolist() == [0]


def test_pass_k_of_the_meta_set_is_the_order_drawn_for_k():
    n = 6
    split = ArraySplit(labels=torch.arange(n) % 2, images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8))
    info = meta_info()
    stream = MetaBatches(split, info, torch.device("cpu"), batch_size=3, seed=5)
    for k in range(3):
        assert stream.next().index.tolist() + stream.next().index.tolist() == stream.order(k).tolist()


def test_factual_infills_make_factual_images_and_the_augmentation_holds_no_checkpoint_state():
    from robust_clp.augmentation import MetadataAugmentation

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 0, 1])
    mask = torch.zeros(4, 1, 6, 6)
    mask[:, :, 2:4, 2:4] = 1.0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 36, 2))
    for f in ("mrand", "fgsm", "random", "shuffle"):
        aug = MetadataAugmentation("none", f, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        x_cf, x_f = aug(x, y, mask, model)
        assert x_cf is None and x_f is not None and x_f.shape == x.shape, f
        assert torch.equal(x_f[..., 2:4, 2:4], x[..., 2:4, 2:4]) and not torch.equal(x_f, x), f
        assert aug.state_dict() == {}, "mean and std come from the dataset, not from a checkpoint"


@pytest.mark.parametrize(("mode", "outputs"), [("vector", 3), ("label_only", 1)])
def test_the_perturbation_network_has_one_output_per_class_or_one_for_the_label(mode, outputs):
    net = PerturbationNet(3, mode)
    assert net.output.out_features == outputs and net.output.in_features == 100  # --meta_net_hidden_size 100
    assert sum(isinstance(m, torch.nn.Linear) for m in net.hidden) == 2  # --meta_net_num_layers 2


def test_an_epoch_drops_the_last_incomplete_batch_as_the_reference(tmp_path):
    run = make_run(tmp_path / "run", sets=["dataset.n_train=56"], steps=None, epochs=1)
    n = len(run.data.splits["train"])  # what the meta set leaves
    assert n % 16 != 0
    assert run.fit()["train"]["steps"] == n // 16


@pytest.mark.parametrize("infill", ["mean", "tile"])
def test_a_meta_batch_without_foreground_gets_no_counterfactuals_and_no_saliency(tmp_path, infill):
    run = make_run(tmp_path / "run", sets=[f"cf_infill={infill}", "f_infill=shuffle", "lambda_=1.0"])
    method = run.method
    batch = method.meta_batches.next()
    fast = dict(method.model.named_parameters())
    loss, logs = method.meta_loss(fast, batch.replace(mask=torch.zeros_like(batch.mask), bbox=None))
    assert logs["meta_cf"] == 0 and logs["meta_sal"] == 0
    assert loss.item() == pytest.approx(logs["meta_ce"].item())


def negate(x, mask, bbox, gen, pad=None):
    return 1.0 - x, mask, bbox


class NegatePlugin:
    @hookimpl
    def register_augmentations(self, register):
        register("zz-negate", negate, description="1 - x (a name after 'none' in sort order)")


def test_the_meta_set_takes_any_registered_augmentation(register_plugin):
    n = 4
    split = ArraySplit(labels=torch.arange(n) % 2, images=torch.randint(0, 255, (n, 1, 2, 2), dtype=torch.uint8))
    info = meta_info()
    with register_plugin(NegatePlugin(), "negate-plugin"):
        plain = MetaBatches(split, info, torch.device("cpu"), batch_size=4, seed=0).next()
        negated = MetaBatches(split, info, torch.device("cpu"), batch_size=4, seed=0, augmentation="zz-negate").next()
    assert torch.equal(plain.index, negated.index) and torch.allclose(negated.x, 1.0 - plain.x)


def test_the_linear_surrogate_is_zero_with_the_saliency_gradient_as_its_gradient():
    from robust_clp.clp import linear_surrogate

    params = {"a": torch.randn(3, requires_grad=True), "b": torch.randn(2, 2, requires_grad=True)}
    grads = {"a": torch.randn(3), "b": torch.randn(2, 2)}
    term = linear_surrogate(params, grads)
    assert term.item() == 0.0
    term.backward()
    assert torch.equal(params["a"].grad, grads["a"]) and torch.equal(params["b"].grad, grads["b"])


@pytest.mark.parametrize(("chosen", "other"), [("jvp", "unrolled"), ("unrolled", "jvp")])
def test_meta_grad_chooses_the_algorithm_that_runs(tmp_path, chosen, other):
    run = make_run(tmp_path / "run", sets=[f"meta_grad={chosen}"])

    def refuse(*args, **kwargs):
        raise AssertionError(f"meta_grad={chosen} ran the {other} meta-gradient")

    setattr(run.method, f"{other}_meta_gradient", refuse)
    assert torch.isfinite(run.method.update(first_batch(run), 0)["loss"])


def test_the_meta_loss_pairs_each_counterfactual_with_its_removed_class(tmp_path, monkeypatch):
    """With CF and F images on, the CF logits are exactly the CF images' rows, and the labelled rows
    are the originals and the F images, each with its label."""
    import robust_clp.clp as clp_module

    seen = []

    def spy(labelled, labels, cf_logits=None, removed=None, kind="logp"):
        seen.append((labelled.shape[0], labels.shape[0], cf_logits.shape[0], removed.shape[0]))
        return counterfactual_batch_losses(labelled, labels, cf_logits, removed, kind)

    monkeypatch.setattr(clp_module, "counterfactual_batch_losses", spy)
    run = make_run(tmp_path / "run", sets=["cf_infill=mean", "f_infill=shuffle"])
    batch = run.method.meta_batches.next()
    run.method.meta_loss(dict(run.method.model.named_parameters()), batch)
    n = len(batch)
    assert seen == [(2 * n, 2 * n, n, n)], "every tiny image has a foreground: n originals, n CF, n F"


@pytest.mark.parametrize(
    ("sets", "drawn"),
    [
        ([], 5),  # both infills: each meta image and its CF and F images take three of the 16 places
        (["f_infill=none"], 8),
        (["cf_infill=none"], 8),
        (["cf_infill=none", "f_infill=none"], 16),
        (["meta_batch_counts=originals"], 16),
        (["meta_batch_size=3"], 1),
        (["meta_batch_size=2"], 1),  # never less than one meta image
    ],
)
def test_the_meta_batch_size_counts_every_image_of_the_meta_step(tmp_path, sets, drawn):
    """meta_batch_size (here the training batch, 16) counts the CF and F images too, as the release
    draws its meta batches from the augmented meta set; meta_batch_counts=originals counts the meta
    images drawn. The enlarged meta batch has at most meta_batch_size images."""
    run = make_run(tmp_path / "run", sets=sets)
    method = run.method
    batch = method.meta_batches.next()
    assert len(batch.y) == drawn
    sizes = []
    original = method.augmentation.forward

    def record(x, y, mask, model):
        x_cf, x_f = original(x, y, mask, model)
        sizes.append(len(x) + sum(len(t) for t in (x_cf, x_f) if t is not None))
        return x_cf, x_f

    method.augmentation.forward = record
    method.update(first_batch(run, 16), 0)
    if not method.augmentation.enabled:
        assert sizes == []
    elif method.config.meta_batch_counts == "originals":
        assert sizes == [3 * 16]
    else:
        assert 0 < sizes[0] <= max(method.config.meta_batch_size or 16, 3)  # at least one image and its two


def test_without_meta_masks_the_meta_batch_is_all_meta_images(tmp_path):
    run = make_run(tmp_path / "run", dataset="tiny-nomask", sets=["allow_no_masks=true", "lambda_=0"])
    assert not run.method.meta_masks and len(run.method.meta_batches.next().y) == 16
