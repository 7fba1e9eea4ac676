"""CLP's settings per dataset.

CIFAR (``CLP_train.py``, ``train.sh``, ``train-noise.sh``; read from the code): CIFAR ResNet-32 from
scratch, SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, batch 128 (train and meta), 200
epochs, lr × 0.01 at epoch 160 and again at 180; perturbation network Adam 1e-3, weight decay
1e-4; λ = 0.5. Data as ``CIFAR_process.py`` builds it (``dataset.recipe=clp``: 1000 clean meta
images in all, i.e. 100 per class on CIFAR-10 and 10 on CIFAR-100; the long tail's class order
shuffled), with the training script's seed 100 passed to ``build_dataloader``. Its training
transform is ``RandomCrop(32, padding=4, padding_mode="reflect")`` and a flip
(``train.augment=crop_flip_reflect``), and its meta set is a deep copy of the training dataset, so
the meta images are cropped and flipped too (``meta_augment=true``). CIFAR has no masks (the
authors' matting model is not released): a run needs ``dataset.mask_provider=NAME`` or, knowingly,
``allow_no_masks=true``.

| preset | data |
|---|---|
| cifar10-lt-{10,100}, cifar100-lt-{10,100} | long-tailed, imb_factor = n_max / n_min (train.sh) |
| cifar10-noisy-{unif,flip,flip2}-{0.2,0.4,0.6}, cifar100-noisy-… | label noise; the paper reports flip2 0.2 / 0.4 and unif 0.4 / 0.6 |

Not released, our guesses (UNVERIFIED):

* ``waterbirds``: ImageNet-pretrained ResNet-50 (the setting of the baselines CLP's table copies),
  SGD lr 1e-3, momentum 0.9, weight decay 1e-4, batch 32, 40 epochs (Chang et al.'s schedule
  length, whose Waterbirds loader CLP copies), a meta set of 50 clean training images per class
  (about CIFAR's 2 % of the training set). Masks: the CUB segmentations, ``dataset.masks=true``
  (found in ``segmentations/`` inside or beside the dataset folder, or ``dataset.masks_dir``).
* ``imagenet-glt``, ``mscoco-glt``: IFL's benchmark recipe (its ``config/*_LT.yaml``: SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, cosine, 100 epochs; ResNeXt-50 there, torchvision's ResNet-50
  from scratch here), batch 128, 10 meta images per class. No masks: name a mask provider.

``synthetic-waterbirds``: a CPU-sized schedule on the generated birds at 32 px, half of them
(``dataset.image_size=32``, ``dataset.scale=0.5``: pass the same to the ERM run it is compared
with): the small ``cnn`` from scratch, Adam 1e-3 without weight decay, 8 epochs, batch 32, 20
meta images per class.
"""

from __future__ import annotations

from typing import Any

META = {"meta_lr": 1e-3, "meta_weight_decay": 1e-4, "lambda_": 0.5}
CIFAR_SGD = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "step",
    "milestones": [160, 180],
    "gamma": 0.01,
}
# CIFAR_process.py: RandomCrop(32, padding=4, padding_mode="reflect") and RandomHorizontalFlip.
CIFAR_TRAIN = {"epochs": 200, "batch_size": 128, "augment": "crop_flip_reflect"}
CLP_DATA = {"recipe": "clp", "seed": 100}  # CIFAR_process.build_dataloader(seed=args.seed=100)
IMB_FACTORS = (10, 100)
NOISE = {"unif": (0.2, 0.4, 0.6), "flip": (0.2, 0.4, 0.6), "flip2": (0.2, 0.4, 0.6)}


def _cifar(dataset_options: dict[str, Any]) -> dict[str, Any]:
    return {
        # The meta set is a deep copy of the training dataset object: its transforms crop and flip.
        "method": {**CIFAR_SGD, **META, "meta_augment": True},
        "train": dict(CIFAR_TRAIN),
        "model": {"name": "resnet32"},
        "dataset": {**CLP_DATA, **dataset_options},
    }


def _presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for classes in (10, 100):
        for imb in IMB_FACTORS:
            presets[f"cifar{classes}-lt-{imb:g}"] = _cifar({"imb_factor": float(imb)})
        for kind, ratios in NOISE.items():
            for ratio in ratios:
                options = {"corruption_type": kind, "corruption_ratio": ratio}
                presets[f"cifar{classes}-noisy-{kind}-{ratio:g}"] = _cifar(options)
    presets["waterbirds"] = {  # UNVERIFIED: not in the release
        "method": {
            "optimizer": "sgd",
            "lr": 1e-3,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 1e-4,
            "schedule": "constant",
            **META,
        },
        "train": {"epochs": 40, "batch_size": 32},
        "model": {"name": "resnet50", "weights": "IMAGENET1K_V1"},
        "dataset": {"meta_per_class": 50, "masks": True},  # the CUB segmentations
    }
    for glt in ("imagenet-glt", "mscoco-glt"):  # UNVERIFIED: IFL's recipe, not CLP's
        presets[glt] = {
            "method": {
                "optimizer": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "nesterov": False,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                **META,
            },
            "train": {"epochs": 100, "batch_size": 128},
            "model": {"name": "resnet50", "weights": None},
            "dataset": {"meta_per_class": 10},
        }
    presets["synthetic-waterbirds"] = {
        "method": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant", **META},
        "train": {"epochs": 8, "batch_size": 32},
        "model": {"name": "cnn"},
        # The images at 32 px and half of them: a CLP step costs ~4-11 ERM steps (benchmarks/clp_step_cost.py), and this is the
        # set-up command's run (a few minutes on 2 CPU cores). Compare ERM with the same options.
        "dataset": {"meta_per_class": 20, "image_size": 32, "scale": 0.5},
    }
    return presets


CLP_PRESETS = _presets()

# Picked from the dataset when no preset is given; braces are the dataset's options.
DATASET_PRESETS = {
    "cifar10-lt": "cifar10-lt-{imb_factor:g}",
    "cifar100-lt": "cifar100-lt-{imb_factor:g}",
    "cifar10-noisy": "cifar10-noisy-{corruption_type}-{corruption_ratio:g}",
    "cifar100-noisy": "cifar100-noisy-{corruption_type}-{corruption_ratio:g}",
    "waterbirds": "waterbirds",
    "imagenet-glt": "imagenet-glt",
    "mscoco-glt": "mscoco-glt",
    "synthetic-waterbirds": "synthetic-waterbirds",
}
