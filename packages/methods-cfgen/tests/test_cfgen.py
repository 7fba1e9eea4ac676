"""CFGen (robust-cfgen): the losses, the enlarged batch, the run on synthetic-waterbirds, the preview."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from robust_counterfactual.counterfactual import batch_foreground, counterfactual_batch_losses, counterfactual_loss
from robust_counterfactual.infill import rectangle_mask

from robust import hookimpl
from robust.config import DatasetConfig
from robust.data import ArraySplit, Batch, DatasetBundle, DatasetInfo
from robust.engine import Run
from robust.errors import ConfigError
from robust.resolve import resolve_run_config
from robust_cfgen.config import CFGenConfig

from .reference import cfgen_reference as reference

SMALL = ["dataset.scale=0.04", "dataset.image_size=32"]


def test_cf_loss_is_ce_towards_the_other_class_in_the_binary_case():
    logits = torch.randn(10, 2, dtype=torch.float64)
    removed = torch.randint(0, 2, (10,))
    expected = F.cross_entropy(logits, 1 - removed, reduction="none")
    assert torch.allclose(counterfactual_loss(logits, removed, "logp").double(), expected.float().double(), atol=1e-5)


def test_cf_loss_is_minus_log_one_minus_p_in_general():
    logits = torch.randn(8, 5)
    removed = torch.randint(0, 5, (8,))
    p = logits.softmax(1).gather(1, removed[:, None]).squeeze(1)
    assert torch.allclose(counterfactual_loss(logits, removed, "logp"), -torch.log1p(-p), atol=1e-5)
    # Stable where p_k is ~1 (float32 1 - p would be 0).
    big = torch.tensor([[50.0, 0.0, 0.0]])
    assert torch.isfinite(counterfactual_loss(big, torch.tensor([0]), "logp")).all()
    uniform = counterfactual_loss(torch.zeros(1, 4), torch.tensor([2]), "uni_e")
    assert uniform.item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_losses_are_normalised_by_the_enlarged_batch_as_the_reference():
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    cf_logits, removed = torch.randn(2, 3), torch.randint(0, 3, (2,))
    c, c_cf = counterfactual_batch_losses(logits, labels, cf_logits, removed, "logp")
    assert c.item() == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item() / 8, rel=1e-5)
    assert c_cf.item() == pytest.approx(counterfactual_loss(cf_logits, removed).sum().item() / 8, rel=1e-5)
    alone, zero = counterfactual_batch_losses(logits, labels, None, None, "logp")
    assert alone.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert zero.item() == 0


def make_run(tmp_path, sets=(), **flags):
    flags.setdefault("epochs", 1)
    resolved = resolve_run_config("cfgen", dataset="synthetic-waterbirds", sets=[*SMALL, *sets], flags=flags)
    return Run(resolved, tmp_path / "run", quiet=True)


def test_batch_grows_by_one_cf_and_one_f_image_per_foreground(tmp_path):
    run = make_run(tmp_path, sets=["reg=none"])
    method = run.method
    seen = []
    original = method.model.forward

    def spy(x):
        seen.append(x.shape[0])
        return original(x)

    method.model.forward = spy
    batch = next(run._train_loader(method.phases()[0]).batches(torch.arange(8)))
    fg = int(batch_foreground(batch).flatten(1).amax(1).gt(0).sum())
    assert fg > 0
    method.update(batch, 0)
    assert seen == [8 + 2 * fg]


def test_reg_needs_full_precision_and_reaches_the_weights(tmp_path):
    assert CFGenConfig().reg == "bbox_o"
    from robust_cfgen.cfgen import CFGen

    assert CFGen.default_amp(CFGenConfig()) == "off"
    assert CFGen.default_amp(CFGenConfig(reg="none")) is None
    run = make_run(tmp_path, sets=["inpaint=none", "f_inpaint=none", "reg_coeff=1000"])
    batch = next(run._train_loader(run.method.phases()[0]).batches(torch.arange(16)))
    logs = run.method.update(batch, 0)
    assert logs["reg"] > 0 and logs["cf"] == 0


@pytest.mark.parametrize(
    "sets",
    [
        [],  # CF(tile) + F(shuffle) + Sal
        ["inpaint=mean", "f_inpaint=mrand", "reg=none"],
        ["inpaint=random", "f_inpaint=fgsm", "reg=none", "cf=uni_e"],
    ],
)
def test_runs_on_synthetic_waterbirds(tmp_path, sets):
    summary = make_run(tmp_path, sets=sets).fit()
    assert summary["preset"] == "synthetic-waterbirds"
    metrics = summary["selection"]["best_val_worst_group"]["metrics"]
    assert 0 <= metrics["test/worst_group_acc"] <= metrics["test/avg_acc"] <= 1


def test_cagan_without_precomputed_images_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="precomputed"):
        make_run(tmp_path, sets=["inpaint=cagan"])


def test_a_dataset_without_masks_is_refused_unless_the_user_opts_out(tmp_path):
    sets = ["dataset.n_train=64", "dataset.n_val=32", "dataset.n_test=32"]
    with pytest.raises(ConfigError, match=r"cfgen needs foreground masks for its counterfactual.*allow_no_masks=true"):
        Run(resolve_run_config("cfgen", dataset="synthetic-cmnist", sets=sets), tmp_path / "refused", quiet=True)
    run = Run(
        resolve_run_config("cfgen", dataset="synthetic-cmnist", sets=[*sets, "allow_no_masks=true"]),
        tmp_path / "run",
        quiet=True,
    )
    assert [o["option"] for o in run.method_context.opt_outs] == ["allow_no_masks"]
    batch = Batch(x=torch.zeros(4, 3, 28, 28), y=torch.zeros(4, dtype=torch.long), index=torch.arange(4))
    assert run.method.update(batch, 0)["cf"] == 0
    # Nothing mask-based switched on: nothing to refuse, nothing recorded.
    plain = ["inpaint=none", "f_inpaint=none", "reg=none"]
    run = Run(resolve_run_config("cfgen", dataset="synthetic-cmnist", sets=[*sets, *plain]), tmp_path / "p", quiet=True)
    assert run.method_context.opt_outs == []


def test_preview_writes_a_grid_of_every_infill(tmp_path):
    out = tmp_path / "grid.png"
    cmd = [
        sys.executable,
        "-m",
        "robust",
        "cfgen",
        "preview",
        "--n",
        "3",
        "--out",
        str(out),
        *(arg for s in SMALL for arg in ("--set", s)),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        width, height = image.size
    assert width == 64 * (1 + 4 + 4)  # original, 4 CF infills, 4 F infills (32-px images shown at 64)
    assert height == 14 + 3 * 64


def test_bit_backbone_builds_from_scratch_and_refuses_a_missing_checkpoint(tmp_path):
    from robust.models import Classifier
    from robust.models.torchvision_resnet import WeightsError
    from robust_cfgen.bit import build_bit_s_r50x1

    model = build_bit_s_r50x1({"weights": None, "zero_head": True}, num_classes=3, input_shape=(3, 32, 32))
    assert isinstance(model, Classifier) and model.feature_dim == 2048
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 2048)
    assert torch.equal(model(x), torch.zeros(2, 3))  # zero head, as the reference on CCT
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms, "BiT uses GroupNorm"
    with pytest.raises(WeightsError, match="npz"):
        build_bit_s_r50x1({"weights": str(tmp_path / "missing.npz")}, num_classes=3, input_shape=(3, 32, 32))


def test_presets_follow_the_reference():
    config = resolve_run_config("cfgen", dataset="waterbirds").config
    assert config.preset == "waterbirds"
    assert (config.method["optimizer"], config.method["lr"], config.method["schedule"]) == ("sgd", 8e-4, "plateau")
    assert (config.train.epochs, config.train.batch_size, config.train.augment) == (40, 32, "bbox_crop_flip")
    assert config.model["name"] == "bit-s-r50x1"
    cct = resolve_run_config("cfgen", dataset="cct").config
    assert (cct.method["optimizer"], cct.method["milestones"], cct.train.batch_size) == ("rmsprop", [15, 30, 45], 64)
    assert cct.model["zero_head"] is True


def write_layout(dataset: str, root) -> None:
    """The dataset in its released layout, as the datasets' own tests generate it (Waterbirds with
    the CUB segmentations where CFGen's fetch script puts them: beside the image folder)."""
    if dataset == "waterbirds":
        from robust_datasets.testing import write_waterbirds

        folder = write_waterbirds(root)
        (folder / "segmentations").rename(root / "segmentations")
    elif dataset == "in9":
        from robust_datasets.testing import write_imagenet9

        write_imagenet9(root)
    else:
        from robust_datasets.testing import write_cct

        write_cct(root)


@pytest.mark.parametrize("dataset", ["waterbirds", "in9", "cct"])
def test_presets_load_the_foreground_and_the_references_normalisation(tmp_path, dataset):
    """The reference presets with a small model, on the released layouts: the training set has
    masks with no option given, inputs are normalised with mean = std = 0.5, training batches get
    CF and F images and a non-zero saliency penalty, and a run goes through."""
    write_layout(dataset, tmp_path / "data")
    flags = {"epochs": 1, "data_root": str(tmp_path / "data")}
    sets = ["dataset.image_size=16", "train.batch_size=4"]
    resolved = resolve_run_config("cfgen", dataset=dataset, model="cnn", sets=sets, flags=flags)
    assert resolved.config.preset == dataset and resolved.config.train.augment == "bbox_crop_flip"
    run = Run(resolved, tmp_path / "run", quiet=True)
    assert run.info.mean == (0.5, 0.5, 0.5) and run.info.std == (0.5, 0.5, 0.5)
    assert run.info.has_masks and run.data.splits["train"].masks is not None
    assert run.method.use_foreground and run.method_context.opt_outs == []
    seen = []
    original = run.method.generate

    def spy(x, y, mask):
        x_cf, x_f = original(x, y, mask)
        seen.append((len(x), x_cf is not None and x_f is not None))
        return x_cf, x_f

    run.method.generate = spy
    loader = run._train_loader(run.method.phases()[0])
    batch = next(loader.batches(torch.arange(4), generator=torch.Generator().manual_seed(0)))
    logs = run.method.update(batch, 0)
    assert seen and seen[0][0] > 0 and seen[0][1], "training images must get CF and F images"
    assert logs["reg"] > 0 and logs["cf"] > 0
    summary = run.fit()
    metrics = summary["selection"][summary["default_selection"]]["metrics"]
    if dataset == "in9":
        assert metrics["test/bg_gap"] == pytest.approx(
            metrics["test_mixed_same/avg_acc"] - metrics["test_mixed_rand/avg_acc"]
        )
    elif dataset == "cct":
        assert summary["default_selection"] == "best_val_auc"
        assert "test_trans/avg_acc" in metrics
    else:
        assert "test_flipped/avg_acc" in metrics


def test_waterbirds_preset_evaluates_the_whole_image_resized(tmp_path):
    """The reference evaluates Waterbirds with a plain Resize((224, 224)) of the whole image, and
    crops its training images from the whole image resized (not from group_DRO's centre crop)."""
    from robust_datasets import waterbirds

    write_layout("waterbirds", tmp_path / "data")
    flags = {"epochs": 1, "data_root": str(tmp_path / "data")}
    resolved = resolve_run_config(
        "cfgen", dataset="waterbirds", model="cnn", sets=["dataset.image_size=16"], flags=flags
    )
    run = Run(resolved, tmp_path / "run", quiet=True)
    options = {"image_size": 16, "crop_fraction": 1.0}
    whole = waterbirds.load(options, tmp_path / "data")
    centre = waterbirds.load({**options, "crop_fraction": 0.875}, tmp_path / "data")
    for split in ("train", "val", "test"):
        assert torch.equal(run.data.splits[split].images, whole.splits[split].images), split
    assert not torch.equal(whole.splits["val"].images, centre.splits["val"].images)


def test_cct_pairs_without_a_box_are_plain_samples_and_boxes_are_infilled_as_boxes(tmp_path):
    """The reference gives a pair without a box -1 coordinates (no CF, F or penalty) and infills the
    boxes of a multi-box pair themselves (is_mask_rect), not the rectangle around them."""
    write_layout("cct", tmp_path / "data")
    flags = {"epochs": 1, "data_root": str(tmp_path / "data")}
    sets = ["dataset.image_size=16", "inpaint=mean", "f_inpaint=none", "reg=none", "train.augment=none"]
    run = Run(
        resolve_run_config("cfgen", dataset="cct", model="cnn", sets=sets, flags=flags), tmp_path / "r", quiet=True
    )
    assert run.method.masks_are_boxes
    batch = next(run._train_loader(run.method.phases()[0]).batches(torch.arange(4)))
    seen = []
    original = run.method.model.forward

    def spy(x):
        seen.append(x.detach().clone())
        return original(x)

    run.method.model.forward = spy
    run.method.update(batch, 0)
    # train pairs: (a: two boxes) (b: no box) (d: one box) (d: whole image); the CF images follow the 4 originals
    x_cf = seen[0][4:]
    assert len(x_cf) == 3, "the pair without a box gets no counterfactual"
    mask = batch.mask[0, 0] > 0.5
    a_cf = x_cf[0]
    assert bool((a_cf[:, mask] == 0).all()), "both boxes filled (mean infill: 0)"
    assert torch.equal(a_cf[:, ~mask], batch.x[0][:, ~mask]), "pixels between the two boxes are kept"


# -- reference-step equivalence (reference/cfgen_reference.py) ------------------------------


class ShapesConfig(DatasetConfig):
    classes: int = 3


def _shapes_split(n: int, classes: int, seed: int) -> ArraySplit:
    """8x8 images with a plus-shaped (not rectangular) foreground at a random place; every fourth has none."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    masks = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for i in range(n):
        if i % 4 == 3:
            continue
        r, c = (int(v) for v in torch.randint(1, 6, (2,), generator=gen))
        masks[i, 0, r - 1 : r + 2, c] = masks[i, 0, r, c - 1 : c + 2] = 255
        images[i, int(y[i]), masks[i, 0] > 0] = 250
    return ArraySplit(labels=y, images=images, masks=masks)


def load_shapes(config: ShapesConfig, data_root) -> DatasetBundle:
    info = DatasetInfo(
        name="cfgen-shapes",
        num_classes=config.classes,
        input_shape=(3, 8, 8),
        class_names=[str(k) for k in range(config.classes)],
        group_names=[],
    )
    splits = {"train": _shapes_split(32, config.classes, 0), "val": _shapes_split(8, config.classes, 1)}
    return DatasetBundle(info, {**splits, "test": splits["val"]})


class ShapesPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("cfgen-shapes", load_shapes, config=ShapesConfig, description="plus-shaped foregrounds")


@pytest.fixture()
def shapes(register_plugin):
    with register_plugin(ShapesPlugin(), "cfgen-shapes-plugin"):
        yield


SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


def shapes_run(tmp_path, sets=(), classes: int = 3) -> Run:
    sets = [*(f"{k}={v}" for k, v in SGD.items()), "schedule=constant", f"dataset.classes={classes}", *sets]
    resolved = resolve_run_config("cfgen", dataset="cfgen-shapes", model="cnn", sets=sets, flags={"epochs": 1})
    return Run(resolved, tmp_path / "run", quiet=True)


def shapes_batches(run: Run, steps: int = 4) -> list[Batch]:
    loader = run._train_loader(run.method.phases()[0])
    order = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    return list(loader.batches(order))[:steps]


REFERENCE_CASES = {
    # name: (our options, the reference's flags); the reference port is run with our values.
    "tile-free default, literal grad_y": (["inpaint=shuffle", "literal_batch_index=true"], {}),
    "intended grad_y (our default)": (["inpaint=shuffle"], {"intended_grad_y": True}),
    "mean CF, random F, uni_e, weighted": (
        ["inpaint=mean", "f_inpaint=random", "cf=uni_e", "cf_coeff=0.5", "reg_coeff=3", "literal_batch_index=true"],
        {"inpaint": "mean", "f_inpaint": "random", "cf": "uni_e", "cf_coeff": 0.5, "reg_coeff": 3.0},
    ),
    "CF only, uni": (
        ["inpaint=random", "f_inpaint=none", "reg=none", "cf=uni"],
        {"inpaint": "random", "f_inpaint": "none", "reg": "none", "cf": "uni"},
    ),
    "F (mean) and saliency, no CF": (
        ["inpaint=none", "f_inpaint=mean", "reg_coeff=30", "literal_batch_index=true"],
        {"inpaint": "none", "f_inpaint": "mean", "reg_coeff": 30.0},
    ),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_update_equals_the_reference_training_step(tmp_path, shapes, one_thread, case, classes):
    """Same weights, batches and infill draws (torch's global generator, seeded per step): after four
    steps of our update and of the port of the reference's training_step + clipped SGD step, every
    parameter and BatchNorm statistic is equal (float32, atol 1e-6), and so is each step's loss.
    Two classes take the reference's CE-to-the-other-class shortcut for the CF loss; three its logsumexp."""
    ours, flags = REFERENCE_CASES[case]
    run = shapes_run(tmp_path, ours, classes)
    method = run.method
    method.mean.fill_(0.5)  # the reference's random colour is normalised with mean = std = 0.5
    method.std.fill_(0.5)
    model = copy.deepcopy(method.model)
    optimizer = torch.optim.SGD(model.parameters(), **{k: v for k, v in SGD.items() if k != "optimizer"})
    for step, batch in enumerate(shapes_batches(run)):
        mask = (batch.mask > 0.5).float()
        assert mask.flatten(1).amax(1).sum() < len(mask), "some images without a foreground"
        torch.manual_seed(step)
        logs = method.update(batch, step)
        torch.manual_seed(step)
        out = reference.training_step(model, batch.x.clone(), batch.y, mask, **flags)
        reference.optimizer_step(model, optimizer, out["loss"], clip=1.0)
        assert logs["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-5, abs=1e-6), step
        assert logs["reg"].item() == pytest.approx(out["reg"].item(), rel=1e-5, abs=1e-7), step
    for (name, ours_t), theirs in zip(method.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.allclose(ours_t.float(), theirs.float(), rtol=1e-5, atol=1e-6), name
    start = copy.deepcopy(shapes_run(tmp_path / "fresh", ours, classes).method.model.state_dict())
    moved = [not torch.equal(start[k], v) for k, v in method.model.state_dict().items()]
    assert any(moved), "the comparison must be after real steps"


def test_cf_and_f_images_and_their_losses_by_hand(tmp_path, shapes, one_thread):
    """CF: the RECTANGLE around the foreground filled, the rest kept, trained away from the label;
    F: the foreground silhouette kept, the background filled, trained with the label; both sums
    over the enlarged batch size."""
    run = shapes_run(tmp_path, ["inpaint=mean", "f_inpaint=mean", "reg=none"])
    batch = shapes_batches(run, 1)[0]
    before = copy.deepcopy(run.method.model)
    seen = []
    original = run.method.model.forward

    def spy(x):
        seen.append(x.detach().clone())
        return original(x)

    run.method.model.forward = spy
    logs = run.method.update(batch, 0)
    (enlarged,) = seen
    x, y, mask = batch.x, batch.y, (batch.mask > 0.5).float()
    fg = mask.flatten(1).amax(1) > 0
    n, k = len(x), int(fg.sum())
    assert 0 < k < n and len(enlarged) == n + 2 * k
    x_cf, x_f = enlarged[n : n + k], enlarged[n + k :]
    box = rectangle_mask(mask[fg]) > 0
    assert bool((box & (mask[fg] == 0)).any()), "the plus shape is not its rectangle"
    assert torch.equal(x_cf, torch.where(box, torch.zeros_like(x_cf), x[fg]))
    assert torch.equal(x_f, torch.where(mask[fg] > 0, x[fg], torch.zeros_like(x_f)))
    logits = before(enlarged)
    total = n + 2 * k
    ce = F.cross_entropy(torch.cat([logits[:n], logits[n + k :]]), torch.cat([y, y[fg]]), reduction="sum") / total
    p_y = logits[n : n + k].softmax(1).gather(1, y[fg][:, None]).squeeze(1)
    cf = -torch.log1p(-p_y).sum() / total
    assert logs["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert logs["cf"].item() == pytest.approx(cf.item(), rel=1e-5)
    assert logs["loss"].item() == pytest.approx(ce.item() + cf.item(), rel=1e-5)


def test_saliency_penalty_is_the_label_logit_gradient_outside_the_foreground(tmp_path, shapes, one_thread):
    run = shapes_run(tmp_path, ["inpaint=none", "f_inpaint=none", "reg_coeff=7"])
    batch = shapes_batches(run, 1)[0]
    before = copy.deepcopy(run.method.model)
    x = batch.x.clone().requires_grad_(True)
    logits = before(x)
    (grad,) = torch.autograd.grad(logits.gather(1, batch.y[:, None]).sum(), x)
    mask = (batch.mask > 0.5).float()
    fg = mask.flatten(1).amax(1) > 0
    outside = 7 * (grad[fg] * (1 - mask[fg])).pow(2).mean()
    inside = 7 * (grad[fg] * mask[fg]).pow(2).mean()
    logs = run.method.update(batch, 0)
    assert logs["reg"].item() == pytest.approx(outside.item(), rel=1e-5)
    assert abs(inside.item() - outside.item()) > 1e-3 * outside.item()
    assert logs["loss"].item() == pytest.approx(logs["ce"].item() + outside.item(), rel=1e-5)


def test_reg_anneal_is_the_references_unclamped_ramp(tmp_path, shapes, one_thread):
    full = shapes_run(tmp_path / "a", ["inpaint=none", "f_inpaint=none"])
    ramp = shapes_run(tmp_path / "b", ["inpaint=none", "f_inpaint=none", "reg_anneal=0.5"])
    batch = shapes_batches(full, 1)[0]
    steps = ramp.method.total_steps
    assert steps > 0
    expected = full.method.update(batch, 3)["reg"].item() * 3 / (steps * 0.5)
    assert ramp.method.update(batch, 3)["reg"].item() == pytest.approx(expected, rel=1e-5)


def test_one_name_per_concept_with_the_references_names_accepted():
    """cf_infill / f_infill are CLP's and the counterfactual package's names; the reference's inpaint /
    f_inpaint set the same options (and are stored under the shared names)."""
    ours = resolve_run_config("cfgen", dataset="synthetic-waterbirds", sets=["cf_infill=mean", "f_infill=random"])
    theirs = resolve_run_config("cfgen", dataset="synthetic-waterbirds", sets=["inpaint=mean", "f_inpaint=random"])
    assert ours.config.method == theirs.config.method
    assert ours.config.method["cf_infill"] == "mean" and ours.config.method["f_infill"] == "random"
    assert "inpaint" not in ours.config.method and "f_inpaint" not in ours.config.method
