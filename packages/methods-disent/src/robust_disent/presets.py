"""The released run scripts' settings per dataset and conflict ratio, as presets of the three methods.

DisEnt (``scripts/run_*_ours.sh``): Adam, 50,000 steps, batch 256 (64 on BFFHQ), evaluation every
500 steps, checkpoint every 1000, swapping and LR decay from step 10,000, decay every 10,000
steps by 0.5 (BFFHQ: 0.1, the flag left at its default).

| preset          | lr     | λ_dis | λ_swap_b | λ_swap |
|-----------------|--------|-------|----------|--------|
| cmnist-*        | 0.01   | 10    | 10       | 1      |
| cifar10c-0.5pct | 0.0005 | 1     | 1        | 1      |
| cifar10c-1pct   | 0.001  | 5     | 5        | 1      |
| cifar10c-2pct   | 0.001  | 5     | 5        | 1      |
| cifar10c-5pct   | 0.001  | 1     | 1        | 1      |
| bffhq-0.5pct    | 0.0001 | 2     | 2        | 0.1    |

Vanilla (``run_*_vanilla.sh``) and LfF as DisEnt compares with it: the same data, batch sizes
and 50,000 steps, lr 0.01 / 0.001 / 0.0001 (CMNIST / CIFAR10C / BFFHQ), no decay. Models:
CMNIST the 100-100-16 MLP on inputs divided by 255 (after ToTensor's /255, as the reference
does), CIFAR10C and BFFHQ torchvision ResNet-18 from scratch with its ImageNet stem.

``synthetic-cmnist`` is a CPU-sized schedule for the generated digits: the same learning rates,
λ's, batch and models, 3,000 steps with swapping and LR decay from step 600, every 600 steps.
"""

from __future__ import annotations

from typing import Any

PCTS = ("0.5", "1", "2", "5")
REFERENCE_STEPS = 50_000
CMNIST_MLP = {"name": "mlp", "hidden_sizes": [100, 100, 16], "input_scale": 1 / 255}
RESNET18 = {"name": "resnet18", "weights": None, "small_input_stem": False}
BATCH = {"cmnist": 256, "cifar10c": 256, "bffhq": 64}
MODEL = {"cmnist": CMNIST_MLP, "cifar10c": RESNET18, "bffhq": RESNET18}
VANILLA_LR = {"cmnist": 0.01, "cifar10c": 0.001, "bffhq": 0.0001}
# (lr, lambda_dis, lambda_swap_b, lambda_swap, lr_gamma) of DisEnt's run scripts.
DISENT_SCRIPTS: dict[tuple[str, str], tuple[float, float, float, float, float]] = {
    **{("cmnist", pct): (0.01, 10.0, 10.0, 1.0, 0.5) for pct in PCTS},
    ("cifar10c", "0.5"): (0.0005, 1.0, 1.0, 1.0, 0.5),
    ("cifar10c", "1"): (0.001, 5.0, 5.0, 1.0, 0.5),
    ("cifar10c", "2"): (0.001, 5.0, 5.0, 1.0, 0.5),
    ("cifar10c", "5"): (0.001, 1.0, 1.0, 1.0, 0.5),
    ("bffhq", "0.5"): (0.0001, 2.0, 2.0, 0.1, 0.1),
}
SYNTHETIC_STEPS, SYNTHETIC_CURR_STEP = 3_000, 600


def _train(dataset: str, steps: int = REFERENCE_STEPS, eval_every: int = 500) -> dict[str, Any]:
    return {
        "steps": steps,
        "batch_size": BATCH[dataset],
        "eval_every_steps": eval_every,
        "checkpoint_every_steps": 2 * eval_every,
    }


def _dataset(pct: str) -> dict[str, Any]:
    return {"conflict_pct": float(pct)}


def _disent(
    lr: float, lambda_dis: float, lambda_swap_b: float, lambda_swap: float, gamma: float, curr: int, decay: int
) -> dict[str, Any]:
    return {
        "lr": lr,
        "lambda_dis": lambda_dis,
        "lambda_swap_b": lambda_swap_b,
        "lambda_swap": lambda_swap,
        "curr_step": curr,
        "use_lr_decay": True,
        "lr_decay_step": decay,
        "lr_gamma": gamma,
    }


DISENT_PRESETS: dict[str, dict[str, Any]] = {
    f"{dataset}-{pct}pct": {
        "method": _disent(lr, ld, lsb, ls, gamma, 10_000, 10_000),
        "train": _train(dataset),
        "model": MODEL[dataset],
        "dataset": _dataset(pct),
    }
    for (dataset, pct), (lr, ld, lsb, ls, gamma) in DISENT_SCRIPTS.items()
}
DISENT_PRESETS["synthetic-cmnist"] = {
    "method": _disent(0.01, 10.0, 10.0, 1.0, 0.5, SYNTHETIC_CURR_STEP, SYNTHETIC_CURR_STEP),
    "train": _train("cmnist", SYNTHETIC_STEPS, 100),
    "model": CMNIST_MLP,
}


def _baseline(method: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """LfF's and vanilla's presets: DisEnt's data, models, batch sizes and steps, no decay."""
    presets = {
        f"{dataset}-{pct}pct": {
            "method": {**method, "lr": VANILLA_LR[dataset]},
            "train": _train(dataset),
            "model": MODEL[dataset],
            "dataset": _dataset(pct),
        }
        for dataset, pct in DISENT_SCRIPTS
    }
    presets["synthetic-cmnist"] = {
        "method": {**method, "lr": VANILLA_LR["cmnist"]},
        "train": _train("cmnist", SYNTHETIC_STEPS, 100),
        "model": CMNIST_MLP,
    }
    return presets


LFF_PRESETS = _baseline({})
# LfF's own Colored MNIST configuration (alinlab/LfF): MLP 3x100, Adam 1e-3, batch 256, 23,500 steps.
LFF_PRESETS["lff-paper-cmnist"] = {
    "method": {"lr": 1e-3},
    "train": {"steps": 23_500, "batch_size": 256, "eval_every_steps": 235, "checkpoint_every_steps": 2350},
    "model": {"name": "mlp", "hidden_sizes": [100, 100, 100], "input_scale": 1 / 255},
}
VANILLA_PRESETS = _baseline({"optimizer": "adam", "weight_decay": 0.0, "schedule": "constant"})

# Picked from the dataset when no preset is given; {conflict_pct:g} is the dataset's option.
DATASET_PRESETS = {
    "cmnist": "cmnist-{conflict_pct:g}pct",
    "cifar10c": "cifar10c-{conflict_pct:g}pct",
    "bffhq": "bffhq-{conflict_pct:g}pct",
    "synthetic-cmnist": "synthetic-cmnist",
}
