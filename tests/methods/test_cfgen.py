"""CFGen (robust-cfgen): the losses, the enlarged batch, the run on synthetic-waterbirds, the preview."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robust.counterfactual import batch_foreground, counterfactual_batch_losses, counterfactual_loss
from robust.data import Batch
from robust.engine import Run
from robust.resolve import resolve_run_config
from robust_cfgen.config import CFGenConfig

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
    from robust.errors import ConfigError

    with pytest.raises(ConfigError, match="precomputed"):
        make_run(tmp_path, sets=["inpaint=cagan"])


def test_a_dataset_without_masks_trains_as_erm_and_says_so(tmp_path, capsys):
    resolved = resolve_run_config(
        "cfgen", dataset="synthetic-cmnist", sets=["dataset.n_train=64", "dataset.n_val=32", "dataset.n_test=32"]
    )
    run = Run(resolved, tmp_path / "run")
    assert "no foreground masks" in capsys.readouterr().err
    batch = Batch(x=torch.zeros(4, 3, 28, 28), y=torch.zeros(4, dtype=torch.long), index=torch.arange(4))
    assert run.method.update(batch, 0)["cf"] == 0


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


@pytest.mark.parametrize("dataset", ["in9", "cct"])
def test_runs_on_the_papers_dataset_layouts(tmp_path, dataset):
    """in9 (silhouette masks from no_fg, the BG-gap) and cct (boxes only, AUC selection), generated
    in their released layouts; the reference presets with a small model."""
    if dataset == "in9":
        from ..datasets.test_imagenet9 import write_tree

        write_tree(tmp_path / "data")
        sets = ["dataset.masks=true", "dataset.image_size=16"]
    else:
        from ..datasets.test_cct import write_cct

        write_cct(tmp_path / "data")
        sets = ["dataset.image_size=16"]
    flags = {"epochs": 1, "data_root": str(tmp_path / "data")}
    resolved = resolve_run_config(
        "cfgen", dataset=dataset, model="cnn", sets=[*sets, "train.batch_size=4"], flags=flags
    )
    assert resolved.config.preset == dataset and resolved.config.train.augment == "bbox_crop_flip"
    run = Run(resolved, tmp_path / "run", quiet=True)
    seen = []
    original = run.method.generate

    def spy(x, y, mask):
        seen.append(int(mask.flatten(1).amax(1).gt(0).sum()))
        return original(x, y, mask)

    run.method.generate = spy
    summary = run.fit()
    assert sum(seen) > 0, "some training images must get CF/F images"
    metrics = summary["selection"][summary["default_selection"]]["metrics"]
    if dataset == "in9":
        assert metrics["test/bg_gap"] == pytest.approx(
            metrics["test_mixed_same/avg_acc"] - metrics["test_mixed_rand/avg_acc"]
        )
    else:
        assert summary["default_selection"] == "best_val_auc"
        assert "test_trans/avg_acc" in metrics
